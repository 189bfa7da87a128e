"""One module per model family; each registers one `ModelAdapter` (gridvlm.models.adapter) when imported.

Modules here are discovered by `gridvlm.models.adapter.list_adapters()`: adding a family is adding a file.
Modules whose name starts with "_" hold code shared by several families and are not discovered.
"""
