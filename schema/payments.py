"""GraphQL for payments: types, queries, mutations (see ../shared/API.md)."""
