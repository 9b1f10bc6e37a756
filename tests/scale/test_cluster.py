"""Three real ``vocable serve`` nodes on loopback sharing one redis-server and one PostgreSQL, nginx in front.

What must hold across nodes: a token opens one session in the whole cluster, whichever node it reaches; the rate
limit is the configured number for the cluster; a conversation on a node killed with SIGKILL goes on, with its
memory, on another node (the recall LLM's reply lists the messages it was sent) and its transcript is complete on
every node; SIGTERM drains a node's live sessions (each finishes its reply, gets ``reconnect`` and resumes through
nginx) and the node exits within ``server.drain_timeout_s``; Redis restarted mid-run stops admissions with a
clear error while live sessions go on, and admissions work again once it is back; ``vocable status`` lists the
nodes from the shared state.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import websockets
from cluster_kit import AUTH, Nginx, Node, new_address, node_config, refused_status, talking, token, until
from recall_llm import recalled

pytest_plugins = ["redis_server", "postgres_cluster"]

DRAIN_TIMEOUT_S = 10


@dataclass
class Cluster:
    nodes: list[Node]
    nginx: Nginx
    config: Path

    def revive(self, node: Node) -> None:
        """Start a node that was killed or drained again, on its port (nginx keeps sending it requests)."""
        node.start().wait_ready()


@pytest.fixture(scope="module")
def cluster(redis_server, postgres_cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        pytest.skip("nginx is not installed (Debian: apt-get install nginx)")
    root = tmp_path_factory.mktemp("cluster")
    config = node_config(root / "vocable.yaml", state_url=redis_server.url, prefix=redis_server.prefix(),
                         storage_url=postgres_cluster.url(postgres_cluster.create_database()),
                         drain_timeout_s=DRAIN_TIMEOUT_S)
    nodes = [Node(name, config, root) for name in ("a", "b", "c")]
    nginx = Nginx(root, nodes)
    try:
        for node in nodes:
            node.start()
        for node in nodes:
            node.wait_ready()
        nginx.start()
        yield Cluster(nodes, nginx, config)
    finally:
        nginx.stop()
        for node in nodes:
            node.stop()


def _status(config: Path) -> list[dict]:
    run = subprocess.run([sys.executable, "-m", "vocable.cli", "status", "-c", str(config), "--json"],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


async def test_vocable_status_lists_every_node_from_the_shared_state(cluster: Cluster) -> None:
    address = new_address()
    b = cluster.nodes[1]
    async with talking(f"{b.ws}?token={await token(cluster.nginx.url, address)}", address):
        def one_session_on_b() -> list[dict] | None:
            nodes = _status(cluster.config)
            sessions = {n["pid"]: n["sessions"] for n in nodes}
            expected = {node.proc.pid: int(node is b) for node in cluster.nodes}  # type: ignore[union-attr]
            ready = all(n["ready"] and n["not_ready"] is None and not n["draining"] for n in nodes)
            return nodes if sessions == expected and ready else None  # heartbeats are a second apart
        nodes = await until(lambda: asyncio.to_thread(one_session_on_b), "status shows b's session", 30, 0.3)
        text = subprocess.run([sys.executable, "-m", "vocable.cli", "status", "-c", str(cluster.config)],
                              capture_output=True, text=True, timeout=30).stdout
    assert len({n["server"] for n in nodes}) == 3  # three servers (each its own /health and /metrics)
    assert text.splitlines()[-1] == "3 nodes, 3 ready, 1 sessions", text


async def test_a_token_opens_exactly_one_session_whichever_node_it_reaches(cluster: Cluster) -> None:
    address = new_address()
    fresh = await token(cluster.nodes[0].url, address)  # minted through node a

    refusals: list[int] = []

    async def attempt(node: Node) -> str | int:
        try:
            async with talking(f"{node.ws}?token={fresh}", address) as (_, ready):
                # hold the session until the other two attempts are decided
                await until(lambda: len(refusals) == 2, "the other attempts were refused", 20, 0.02)
                return str(ready["session_id"])
        except websockets.InvalidStatus as refused:
            refusals.append(refused.response.status_code)
            return refused.response.status_code

    outcomes = await asyncio.gather(*(attempt(node) for node in cluster.nodes))  # all three at once
    assert sum(isinstance(o, str) for o in outcomes) == 1, outcomes
    assert sorted(o for o in outcomes if isinstance(o, int)) == [403, 403], outcomes
    for node in cluster.nodes:  # and afterwards, on every node, the token is used
        assert (await refused_status(f"{node.ws}?token={fresh}", address))[0] == 403


async def test_the_rate_limit_holds_across_nodes(cluster: Cluster) -> None:
    address = new_address()
    statuses: list[int] = []
    async with httpx.AsyncClient(timeout=10) as http:
        for i in range(40):  # round robin over the three nodes: the limit is 30 for the cluster, not 90
            node = cluster.nodes[i % 3]
            response = await http.post(f"{node.url}/session", headers={**AUTH, "X-Forwarded-For": address})
            statuses.append(response.status_code)
    assert statuses.count(200) == 30 and statuses.count(429) == 10, statuses
    assert statuses[:30] == [200] * 30


async def test_a_conversation_on_a_sigkilled_node_resumes_on_another_with_its_memory(cluster: Cluster) -> None:
    victim = cluster.nodes[2]
    address = new_address()
    mine = await token(cluster.nginx.url, address)
    facts = ["my name is Ada", "I live in Lisbon"]
    async with talking(f"{victim.ws}?token={mine}", address) as (talker, ready):
        session_id = ready["session_id"]
        for fact in facts:
            assert recalled(await talker.turn(fact))[-1] == fact
        await talker.say("tell me a long story")
        await talker.next("reply")  # mid-reply
        victim.kill()
    try:
        # back through nginx, which finds the dead node refusing connections and goes on to a live one
        async with talking(f"{cluster.nginx.ws}?token={mine}&resume={session_id}", address) as (talker, ready):
            assert ready["session_id"] == session_id and ready["resumed"] is True
            reply = await talker.turn("what did I tell you")
        # the LLM was sent every finished turn from before the kill (the story never finished: not in memory)
        assert recalled(reply) == [*facts, "what did I tell you"]
        async with httpx.AsyncClient(timeout=10) as http:
            for base in (cluster.nodes[0].url, cluster.nodes[1].url, cluster.nginx.url):
                transcript = (await http.get(f"{base}/sessions/{session_id}/transcript", headers=AUTH)).json()
                assert [t["user_text"] for t in transcript["turns"]] == [*facts, "what did I tell you"], base
                assert recalled(transcript["turns"][-1]["reply_text"]) == [*facts, "what did I tell you"]
    finally:
        cluster.revive(victim)


async def test_sigterm_drains_five_sessions_that_resume_elsewhere_through_nginx(cluster: Cluster) -> None:
    victim = cluster.nodes[1]
    clients = [(new_address(), i) for i in range(5)]

    async def one(address: str, i: int, started: asyncio.Event, all_speaking: asyncio.Barrier) -> None:
        mine = await token(cluster.nginx.url, address)
        async with talking(f"{victim.ws}?token={mine}", address) as (talker, ready):
            session_id = ready["session_id"]
            await talker.turn(f"my number is {i}")
            await talker.say("count for me")
            await talker.next("reply")
            begun = len(talker.seen) - 1
            await all_speaking.wait()
            await started.wait()  # SIGTERM is on its way while this reply is being spoken
            finished = await talker.reply(DRAIN_TIMEOUT_S, since=begun)  # the reply plays to its end...
            assert recalled(finished) == [f"my number is {i}", "count for me"]
            reconnect = await talker.next("reconnect")  # ...then: reconnect elsewhere
            assert reconnect["reason"] == "server_draining"
            assert await talker.closed() == 1012
        async with talking(f"{cluster.nginx.ws}?token={mine}&resume={session_id}", address) as (talker, ready):
            assert ready["session_id"] == session_id and ready["resumed"] is True
            assert recalled(await talker.turn("what did I tell you")) == [
                f"my number is {i}", "count for me", "what did I tell you"]

    started = asyncio.Event()
    all_speaking = asyncio.Barrier(6)
    tasks = [asyncio.create_task(one(address, i, started, all_speaking)) for address, i in clients]
    try:
        await all_speaking.wait()
        t0 = time.monotonic()
        victim.terminate()
        started.set()
        await asyncio.gather(*tasks)
        await asyncio.to_thread(victim.proc.wait, DRAIN_TIMEOUT_S + 5)  # type: ignore[union-attr]
        assert time.monotonic() - t0 < DRAIN_TIMEOUT_S, "the node took longer than its drain timeout"
        assert '"drained"' in victim.log()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        cluster.revive(victim)


async def test_redis_restarted_mid_run_fails_admissions_closed_and_live_sessions_go_on(
        cluster: Cluster, redis_server) -> None:
    a, b = cluster.nodes[0], cluster.nodes[1]
    address = new_address()
    spare = await token(a.url, address)  # minted before the outage; used during it, and after
    async with talking(f"{a.ws}?token={await token(a.url, address)}", address) as (talker, _):
        await talker.turn("before the outage")
        redis_server.stop()
        try:
            # live: the session goes on (its copy in Redis is behind, logged as checkpoint_failed)
            assert recalled(await talker.turn("during the outage"))[-1] == "during the outage"
            status, headers = await refused_status(f"{b.ws}?token={spare}", address)
            assert status == 503 and headers.get("retry-after") == "1"
            async with httpx.AsyncClient(timeout=10) as http:
                refused = await http.post(f"{b.url}/session", headers={**AUTH, "X-Forwarded-For": address})
            assert refused.status_code == 503 and refused.json()["error"] == "state_unavailable"
            assert "unreachable" in refused.json()["message"]
        finally:
            redis_server.start()
        assert recalled(await talker.turn("after the outage"))[-1] == "after the outage"
    # the token refused during the outage was not spent: it opens a session now
    async with talking(f"{b.ws}?token={spare}", address) as (talker, ready):
        assert ready["resumed"] is False
        assert recalled(await talker.turn("hello again")) == ["hello again"]


async def test_a_node_with_workers_is_one_server_of_the_cluster(cluster: Cluster, tmp_path: Path) -> None:
    """``vocable serve --workers 2`` with ``state.url``: each worker is a node in Redis, the two are one server
    (its /health lists both), and a conversation started on the cluster resumes on one of its workers."""
    workers = Node("w", cluster.config, tmp_path, workers=2).start()
    try:
        def both_workers() -> dict | None:
            try:
                health = httpx.get(f"{workers.url}/health", timeout=5).json()
            except httpx.TransportError:
                return None  # not listening yet
            return health if len(health.get("workers", {})) == 2 and all(
                w["ready"] for w in health["workers"].values()) else None
        health = await until(lambda: asyncio.to_thread(both_workers), "both workers ready", 120, 0.3)
        assert all(w.startswith(f"{health['worker'].rsplit('-', 1)[0]}-") for w in health["workers"])  # host-pid
        def listed() -> list[dict] | None:
            nodes = _status(cluster.config)
            return nodes if set(health["workers"]) <= {n["node"] for n in nodes} else None
        nodes = await until(lambda: asyncio.to_thread(listed), "status lists both workers", 20, 0.3)
        mine = {n["server"] for n in nodes if n["node"] in health["workers"]}
        others = {n["server"] for n in nodes if n["node"] not in health["workers"]}
        assert len(mine) == 1 and not mine & others  # the two workers are one server, not a, b or c
        address = new_address()
        fresh = await token(cluster.nodes[0].url, address)
        async with talking(f"{cluster.nodes[0].ws}?token={fresh}", address) as (talker, ready):
            await talker.turn("my name is Grace")
        async with talking(f"{workers.ws}?token={fresh}&resume={ready['session_id']}", address) as (talker, again):
            assert again["resumed"] is True
            assert recalled(await talker.turn("who am I")) == ["my name is Grace", "who am I"]
    finally:
        workers.stop()
