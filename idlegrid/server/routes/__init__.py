"""HTTP routes: parse, call a service, return a wire model. Errors map in app.py."""
