"""The schema keeps the public contract: every type, field, argument and enum value that
docs/API.md names exists, and schema.graphql is the schema as the code builds it."""

import re
from pathlib import Path

import pytest
from django.conf import settings
from graphql import GraphQLEnumType, GraphQLInputObjectType, GraphQLObjectType

from schema import schema

API_MD = settings.BASE_DIR / "docs" / "API.md"  # the contract users read, in the repository
# The steering copy, beside a checkout on the team's machines (a fresh clone has none).
SHARED_API_MD = settings.BASE_DIR.parent / "shared" / "API.md"
SCHEMA_FILE = settings.BASE_DIR / "schema.graphql"

_DEFINITION = re.compile(r"\b(type|enum)\s+(\w+)[^{]*\{", re.S)
_FIELD = re.compile(r"(\w+)\s*(\([^)]*\))?\s*:")
_ARGUMENT = re.compile(r"(\w+)\s*:")


def _contract(path: Path) -> list[tuple[str, str, str, list[str]]]:
    """(kind, type, field or enum value, argument names) for each item the file names."""
    blocks = re.findall(r"```graphql\n(.*?)```", path.read_text(), re.S)
    items = []
    for block in blocks:
        text = re.sub(r"#[^\n]*", "", block)
        for match in _DEFINITION.finditer(text):
            kind, name = match.groups()
            body = text[match.end() : text.index("}", match.end())]
            if kind == "enum":
                items += [(kind, name, value, []) for value in body.split()]
                continue
            for field, arguments in _FIELD.findall(body):
                names = _ARGUMENT.findall(arguments) if arguments else []
                items.append((kind, name, field, names))
    return items


CONTRACT = _contract(API_MD)


def _type(name: str):
    roots = {
        "Query": schema._schema.query_type,
        "Mutation": schema._schema.mutation_type,
        "Subscription": schema._schema.subscription_type,
    }
    return roots.get(name) or schema._schema.get_type(name)


def test_the_contract_names_the_api():
    assert len(CONTRACT) > 100, f"{API_MD} lost its graphql blocks"


@pytest.mark.parametrize(
    ("kind", "type_name", "member", "arguments"),
    [pytest.param(*item, id=f"{item[1]}.{item[2]}") for item in CONTRACT],
)
def test_the_contract_is_served(kind, type_name, member, arguments):
    graphql_type = _type(type_name)
    assert graphql_type is not None, f"type {type_name} is missing"
    if kind == "enum":
        assert isinstance(graphql_type, GraphQLEnumType)
        assert member in graphql_type.values
        return
    assert isinstance(graphql_type, GraphQLObjectType | GraphQLInputObjectType)
    assert member in graphql_type.fields, f"{type_name}.{member} is missing"
    missing = set(arguments) - set(graphql_type.fields[member].args)
    assert not missing, f"{type_name}.{member} lacks arguments {missing}"


@pytest.mark.skipif(not SHARED_API_MD.exists(), reason=f"no {SHARED_API_MD} beside this checkout")
def test_the_repository_contract_keeps_everything_the_shared_one_names():
    """The repository's copy is authoritative for users and may extend the contract, but
    never drops an item the team's shared copy fixes: copy new items into docs/API.md."""
    shared, repository = _arguments_by_item(_contract(SHARED_API_MD)), _arguments_by_item(CONTRACT)

    # An item may gain arguments here (an optional one, e.g. idempotencyKey), never lose one.
    lacking = sorted(
        (item, sorted(arguments - repository.get(item, set())))
        for item, arguments in shared.items()
        if item not in repository or not arguments <= repository[item]
    )
    assert not lacking, f"docs/API.md lacks {lacking}"


def _arguments_by_item(contract) -> dict[tuple[str, str, str], set[str]]:
    arguments: dict[tuple[str, str, str], set[str]] = {}
    for kind, name, member, names in contract:
        arguments.setdefault((kind, name, member), set()).update(names)
    return arguments


def test_schema_file_matches_the_code():
    """`make schema` writes schema.graphql; a change to the API shows in review."""
    assert SCHEMA_FILE.read_text().strip() == str(schema).strip(), "run `make schema`"
