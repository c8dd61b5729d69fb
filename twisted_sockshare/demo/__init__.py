"""
The demo application: a backend that speaks the wire format (echo, with
delays), an HTTP API gateway in front of it, the other ways of reaching a
backend that the shared client is compared with, and the C{twistd} plugins
C{sockshare-server} and C{sockshare-client} that run them.

It uses the library like any application would; the library never imports it.
"""
