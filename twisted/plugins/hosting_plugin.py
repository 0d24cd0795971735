"""twistd plugin: ``twistd -n hosting --site DIR --http 127.0.0.1:8000``."""

from twisted.application.service import ServiceMaker

hosting = ServiceMaker("hg-hosting", "daemon.tap", "Mercurial hosting: hgweb, pages and SSH", "hosting")
