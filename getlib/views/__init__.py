"""What each stage's notebook shows of that stage's objects: one module per notebook, imported by it
alone (so an edit of a view re-runs that stage only), and `show`, how every notebook shows a table
and an image grid (shared: an edit of it re-runs every stage whose notebook uses it). Nothing here
trains or writes."""
