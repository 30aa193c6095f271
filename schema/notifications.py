"""GraphQL for notifications: types, queries, mutations (see ../shared/API.md)."""
