"""The nginx configuration of docs/deploy.md, as the tests run it: ``site`` is the part the docs show (an
``upstream`` of nodes and a ``server`` in front), ``nginx_conf`` wraps it in a whole file for a private nginx."""

from __future__ import annotations

SITE = """\
upstream vocable {
{servers}
}

map $http_upgrade $connection_upgrade {
    default upgrade;
    ''      close;
}

server {
    listen {listen};

    location / {
        proxy_pass http://vocable;
        proxy_http_version 1.1;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection $connection_upgrade;
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_buffering off;
        proxy_connect_timeout 2s;
        proxy_read_timeout 3600s;
        proxy_send_timeout 3600s;
        # a node that refuses (draining, saturated: 503) or is gone: the same request goes to the next one
        proxy_next_upstream error timeout http_502 http_503;
        proxy_next_upstream_tries 3;
        proxy_next_upstream_timeout 10s;
    }
}
"""


def site(listen: str, upstreams: list[str]) -> str:
    servers = "\n".join(f"    server {u} max_fails=1 fail_timeout=2s;" for u in upstreams)
    return SITE.replace("{servers}", servers).replace("{listen}", listen)


def nginx_conf(*, listen: str, upstreams: list[str], root: str) -> str:
    body = "\n".join("    " + line if line else "" for line in site(listen, upstreams).splitlines())
    return f"""\
daemon off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
{body}
}}
"""
