"""What each stage's notebook shows of that stage's objects: one module per notebook, imported by it
alone (so an edit of a view re-runs that stage only). Nothing here trains or writes."""
