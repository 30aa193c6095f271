"""GraphQL for analytics: types, queries, mutations (see ../shared/API.md)."""
