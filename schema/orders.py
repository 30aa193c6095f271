"""GraphQL for orders: types, queries, mutations (see ../shared/API.md)."""
