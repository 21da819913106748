"""`edgekit recipes`: list the bundled recipes."""

from __future__ import annotations

import click


@click.command("recipes")
def recipes_cmd():
    """List the bundled recipes."""
    from edgekit.recipe import list_recipes, load_recipe
    from edgekit.table import table

    rows = [("recipe", "model", "dataset", "description")]
    for name in list_recipes():
        r = load_recipe(name)
        data = r.data.name + (f" (else {r.data.fallback})" if r.data.fallback else "")
        rows.append((name, r.model.name, data, r.description))
    click.echo(table(rows))
