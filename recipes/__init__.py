"""Shipped recipes, installed as the package `steel.recipes` (see `steel.resources.recipe_path`).

This file lets the wheel and an editable install map this top-level folder into the `steel`
package. It contains no code.
"""
