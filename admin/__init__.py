"""The admin web app: JSON API under /admin/api (and, later, the browser panel under /admin)."""
