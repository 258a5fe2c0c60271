"""Quotes: a request matched and priced now, held for ``quote_ttl_s``.

A quote reserves nothing and costs no funds, so it reads outside any write
transaction (on SQLite a write transaction holds the database's one write lock)
and the route limits it per buyer. ``ClusterService.deploy`` turns a quote into a
cluster at its price.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from decimal import Decimal

from sqlalchemy.orm import Session, sessionmaker

from idlegrid.core import pricing
from idlegrid.core.clusters import DurationUnit, duration_hours, prepayment
from idlegrid.core.fees import format_amount
from idlegrid.protocol import DeployRequest, PriceItem, QuoteView
from idlegrid.server.db.models import Quote
from idlegrid.server.services.market import Marketplace
from idlegrid.server.settings import ServerSettings


class QuoteService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        market: Marketplace,
        settings: ServerSettings,
        clock: Callable[[], float],
    ) -> None:
        self.sessions = sessions
        self.market = market
        self.settings = settings
        self.clock = clock

    def quote(self, owner: str, req: DeployRequest) -> QuoteView:
        """Match now and price the request (``core/pricing.py``): dynamic, or an
        auction when the buyer names a maximum. Nothing is reserved yet.

        The matching and pricing read outside any write transaction (on SQLite a
        write transaction holds the database's one write lock); only the quote's row
        is written, in a transaction of its own."""
        hours = duration_hours(req.duration, DurationUnit(req.duration_unit))
        now = self.clock()
        with self.sessions() as db:
            reqs = self.market.requirements(db, owner, req, (), req.quantity)
            found = self.market.find(db, owner, reqs)
            devices = len(found.devices) if req.product == "mega-ray" else req.quantity
            if req.max_price_usd is not None:
                candidates, floors = self.market.hireable(db, owner)
                breakdown = self.market.auction(req, reqs, candidates, floors, devices, hours)
            else:
                breakdown = pricing.price(
                    pricing.PriceRequest(
                        base_usd=self.market.base_usd(req, found.devices),
                        devices=devices,
                        hours=hours,
                        market=self.market.market_of(db, reqs, found.explain),
                        urgency=pricing.Urgency(req.start),
                        min_tier=req.min_tier,
                        location_constrained=bool(req.locations),
                        secure=req.secure,
                    ),
                    req.currency,
                    self.market.oracle.io_usd(),
                )
                cap = self.market.micro_usd(breakdown.per_device_hour, req.currency)
                found = self.market.find(db, owner, reqs, cap)
        quote = Quote(
            id=secrets.token_hex(16),
            owner=owner,
            request=req.model_dump(mode="json"),
            currency=req.currency,
            price=breakdown.per_device_hour,
            devices=devices,
            hours=hours,
            created_at=now,
            expires_at=now + self.settings.quote_ttl_s,
        )
        view = self._quote_view(quote, breakdown, found.explain.as_dict())
        with self.sessions.begin() as db:
            db.add(quote)
        return view

    def _quote_view(self, q: Quote, bd: pricing.Breakdown, explain: dict[str, int]) -> QuoteView:
        pay = prepayment(q.price, q.devices, q.hours, q.currency)
        cur = q.currency
        return QuoteView(
            id=q.id,
            request=DeployRequest.model_validate(q.request),
            devices=q.devices,
            hours=q.hours,
            currency=cur,  # type: ignore[arg-type]
            price_per_device_hour=format_amount(q.price, cur),
            subtotal=format_amount(pay.subtotal, cur),
            buyer_fee=format_amount(pay.buyer_fee, cur),
            total=format_amount(pay.total, cur),
            usd_per_device_hour=f"{Decimal(self.market.micro_usd(q.price, cur)) / 10**6:.4f}",
            mode="auction" if q.request.get("max_price_usd") else "dynamic",
            breakdown=[
                PriceItem(
                    name=i.name,
                    per_device_hour=format_amount(i.units, cur),
                    total=format_amount(i.units * q.devices * q.hours, cur),
                    detail=i.detail,
                )
                for i in bd.items
            ],
            io_usd=str(self.market.oracle.io_usd()),
            expires_at=q.expires_at,
            explain=explain,
        )
