"""Exchange with annotation tools (step 4 of the method, docs/paper.md): export S (or a test set) with the
target's prediction as a pre-annotation, and import the finished pixel labels.

One module per tool (labelstudio, cvat, coco); `bundle` gathers what every export needs,
`collect` checks what every import found, `labels` commits it to the workspace.
"""

IGNORE_COLOR = (224, 224, 192)
FORMATS = ("labelstudio", "cvat", "coco")


def ignore_name(classes: tuple[str, ...]) -> str:
    """The label annotators paint for pixels nobody can label (stored as 255)."""
    return "ignore" if "ignore" not in classes else "madmine-ignore"
