"""The browser dashboard: one static page served by the engine, no build step."""
