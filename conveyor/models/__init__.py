"""The database layer every feature shares: the declarative base, engines, applying
migrations (their history is conveyor/migrations/) and the compressed JSON columns. Each
feature owns its own tables."""
