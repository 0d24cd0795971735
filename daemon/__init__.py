"""The hg-hosting daemon: hgweb for every repository, the hosting pages and SSH (Twisted)."""
