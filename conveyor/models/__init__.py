"""The database layer every feature shares: the declarative base, engines, migrations and the
compressed JSON columns. Each feature owns its own tables."""
