"""azbai."""
