"""GraphQL for crm: types, queries, mutations (see ../shared/API.md)."""
