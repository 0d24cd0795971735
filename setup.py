"""Install hg-hosting: the Mercurial extension, the daemon, the templates and the CLI."""

from setuptools import setup

setup(
    name="hg-hosting",
    version="0.1.0",
    description="Self-hosted Mercurial hosting for teams: hooks, daemon, pages, SSH",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.11",
    packages=["hgext_hosting", "hgext_hosting.service", "daemon", "daemon.api", "hg_hosting_templates", "twisted.plugins"],
    # templates/ is installed as the package hg_hosting_templates (Jinja2 loads from it).
    package_dir={"hg_hosting_templates": "templates"},
    # hgext3rd is Mercurial's namespace for third-party extensions: "[extensions] hosting =".
    py_modules=["hgext3rd.hosting"],
    package_data={"hg_hosting_templates": ["*.html", "static/*", "hgweb/map-*", "hgweb/hosting/*"]},
    install_requires=[
        "mercurial>=7.2,<7.3",
        "hg-evolve>=12,<13",
        "twisted[conch]>=26.0,<27",
        "peewee>=4.5,<5",
        "jinja2>=3.1,<4",
        "argon2-cffi>=25.1,<26",
        "cryptography>=45",
        "markdown-it-py>=4,<5",
    ],
    extras_require={
        "test": ["pytest>=9,<10", "pytest-xdist>=3.6,<4", "ruff>=0.15", "playwright>=1.65,<2",
                 "psycopg2-binary>=2.9,<3", "aiosmtpd>=1.4,<2", "schemathesis==4.32.5", "feedparser>=6,<7"],
        "postgresql": ["psycopg2-binary>=2.9,<3"],
    },
    entry_points={"console_scripts": ["hg-hosting = daemon.cli:main"]},
)
