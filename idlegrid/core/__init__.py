"""The pure core: plain values in, plain values out; no DB, HTTP, Ray or clock reads."""
