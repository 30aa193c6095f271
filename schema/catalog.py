"""GraphQL for catalog: types, queries, mutations (see ../shared/API.md)."""
