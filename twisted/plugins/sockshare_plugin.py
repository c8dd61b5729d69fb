"""
twistd plugins of twisted_sockshare: C{sockshare-server} and C{sockshare-client}.
"""

from twisted.application.service import ServiceMaker

sockshareServer = ServiceMaker(
    "twisted_sockshare demo backend",
    "twisted_sockshare.demo.tap_server",
    "A demo backend speaking the twisted_sockshare wire protocol (echo, with delays).",
    "sockshare-server",
)
sockshareClient = ServiceMaker(
    "twisted_sockshare demo gateway",
    "twisted_sockshare.demo.tap_client",
    "A demo HTTP API gateway sharing one backend connection among all requests.",
    "sockshare-client",
)
