# A user's server for the end-to-end tests (testkit/src/jupyterhub.rs): JupyterHub's own mock
# single-user server (jupyterhub.tests.mocksu: `.../env` answers its environment, any other path
# is echoed), and a kernel's websocket, `.../api/kernels/<id>/channels`, which echoes every
# message prefixed with the server's user and name, so a test knows whose server answered over
# a connection that a gateway carries.
import os
from urllib.parse import urlparse

from jupyterhub.tests.mocksu import ArgsHandler, EchoHandler
from jupyterhub.tests.mockservice import EnvHandler
from tornado import httpserver, ioloop, web, websocket


class ChannelsHandler(websocket.WebSocketHandler):
    def on_message(self, message):
        owner = os.environ.get("JUPYTERHUB_USER", "") + "/" + os.environ.get("JUPYTERHUB_SERVER_NAME", "")
        self.write_message(owner + " " + message)


def main():
    url = urlparse(os.environ["JUPYTERHUB_SERVICE_URL"])
    app = web.Application(
        [
            (r".*/api/kernels/[^/]+/channels", ChannelsHandler),
            (r".*/args", ArgsHandler),
            (r".*/env", EnvHandler),
            (r".*", EchoHandler),
        ]
    )
    httpserver.HTTPServer(app).listen(url.port, url.hostname)
    ioloop.IOLoop.current().start()


if __name__ == "__main__":
    main()
