"""Simulations of the network, for choosing its rules with numbers.

``market``: simulated weeks of supply and demand, played under each pricing policy
(fixed list price, dynamic, auction); ``benchmarks/market.py`` prints the comparison.
"""

from idlegrid.sim.market import Metrics, Policy, Scenario, compare, standard_scenario

__all__ = ["Metrics", "Policy", "Scenario", "compare", "standard_scenario"]
