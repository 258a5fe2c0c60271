"""Services: each public method loads, calls the core, and persists in one transaction."""
