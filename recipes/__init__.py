# Recipes ship inside the wheel as the package `edgekit.recipes` (see pyproject.toml).
