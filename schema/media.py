"""GraphQL for media: types, queries, mutations (see ../shared/API.md)."""
