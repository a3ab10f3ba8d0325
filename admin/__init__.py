"""The admin web app: the JSON API under /admin/api and the browser panel under /admin."""
