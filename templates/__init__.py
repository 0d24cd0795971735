"""The Jinja2 templates of the hosting pages, installed as package ``hg_hosting_templates``."""
