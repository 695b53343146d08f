"""The trip-package example's workflows."""
