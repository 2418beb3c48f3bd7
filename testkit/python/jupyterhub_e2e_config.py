# JupyterHub configuration for the end-to-end tests (testkit/src/jupyterhub.rs): a hub that
# does not start a proxy but talks to ours at E2E_PROXY_API_URL, and spawns each server as a
# local process running JupyterHub's mock single-user server. Everything is set from the
# environment so one file serves every test.
import os
import sys

from jupyterhub.spawner import SimpleLocalProcessSpawner

c = get_config()  # noqa: F821 (JupyterHub's config loader provides it)

state_dir = os.environ["E2E_STATE_DIR"]

c.JupyterHub.base_url = os.environ.get("E2E_BASE_URL", "/")
# Loopback, or a pod address of the test's pod network (testkit/src/podnet.rs), where the
# routing objects may not hold loopback.
c.JupyterHub.hub_ip = os.environ.get("E2E_IP", "127.0.0.1")
c.JupyterHub.hub_port = int(os.environ["E2E_HUB_PORT"])
c.JupyterHub.db_url = "sqlite:///" + os.path.join(state_dir, "jupyterhub.sqlite")
c.JupyterHub.cookie_secret_file = os.path.join(state_dir, "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = os.path.join(state_dir, "jupyterhub.pid")
c.JupyterHub.allow_named_servers = True
# Stop the servers when the hub stops, so no mock server outlives a test.
c.JupyterHub.cleanup_servers = True
# Answer a start or stop request after 2 s at most (202 while pending): the tests poll, and
# their HTTP client gives up after 10 s.
c.JupyterHub.tornado_settings = {"slow_spawn_timeout": 2, "slow_stop_timeout": 2}

# How often the hub reads the routes' last_activity into its users' and servers' activity.
c.JupyterHub.last_activity_interval = int(os.environ.get("E2E_LAST_ACTIVITY_INTERVAL", "300"))

c.ConfigurableHTTPProxy.should_start = False
c.ConfigurableHTTPProxy.api_url = os.environ["E2E_PROXY_API_URL"]
c.ConfigurableHTTPProxy.auth_token = os.environ["E2E_PROXY_TOKEN"]

# Tests act through the API with the service's token, and a browser may log in as anyone with
# E2E_USER_PASSWORD.
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = os.environ["E2E_USER_PASSWORD"]
c.Authenticator.allow_all = True
c.JupyterHub.services = [{"name": "e2e", "api_token": os.environ["E2E_ADMIN_TOKEN"]}]
c.JupyterHub.load_roles = [{"name": "admin", "services": ["e2e"]}]

# SimpleLocalProcessSpawner needs no system users. Instead of jupyterhub-singleuser, run
# E2E_SINGLEUSER, mock_singleuser.py beside this file (JupyterHub's mock server, which echoes
# paths and serves its environment at `.../env`, and a kernel's websocket), on the port the hub
# chose.
c.JupyterHub.spawner_class = SimpleLocalProcessSpawner
c.Spawner.cmd = [sys.executable, os.environ["E2E_SINGLEUSER"]]
c.Spawner.args = []
c.SimpleLocalProcessSpawner.home_dir_template = os.path.join(state_dir, "home", "{username}")
c.Spawner.ip = os.environ.get("E2E_IP", "127.0.0.1")
