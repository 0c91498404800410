"""The run folder, a recipe bound to it, the step table and the typed step results."""
