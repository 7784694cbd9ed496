"""Registry loading: the shipped file, each error sentence, and the remote source."""

import json
import textwrap

import pytest

from services.agents.registry_files import registry_to_toml, write_test_registry
from services.gateway.registry import DEFAULT_REGISTRY_PATH, Registry, RegistryError, RegistrySource, load_registry_file

from .helpers import LocalHTTPServer

GOOD_MODEL = textwrap.dedent("""
    [[agents.models]]
    model_id = "m1"
    context_window = 1000
    cost_per_1m_input = 1.0
    cost_per_1m_output = 2.0
""")


def agent_toml(agent_id="a1", port="7001", extra="", models=GOOD_MODEL):
    return f'[[agents]]\nagent_id = "{agent_id}"\nport = {port}\n{extra}\n{models}\n'


def load_text(tmp_path, text):
    path = tmp_path / "agents.toml"
    path.write_text(text)
    return load_registry_file(path)


def assert_one_sentence_naming(exc: RegistryError, *words: str):
    message = str(exc)
    assert message.endswith("."), message
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_shipped_registry_is_the_default_fleet():
    registry = load_registry_file(DEFAULT_REGISTRY_PATH)
    assert [a.agent_id for a in registry.agents] == ["architect", "dir-code", "dir-data", "dir-ops"]
    assert [a.port for a in registry.agents] == [6110, 6111, 6112, 6113]
    assert registry.get("architect").parent_role == ""
    assert [a.agent_id for a in registry.children("architect")] == ["dir-code", "dir-data", "dir-ops"]
    assert all(a.protocol == "native" and a.host == "127.0.0.1" for a in registry.agents)
    assert all(2 <= len(a.models) <= 3 for a in registry.agents)
    assert registry.get("dir-code").name == "Code Director"
    assert registry.get("dir-code").model("ref-fast").context_window == 8192
    assert registry.get("dir-code").base_url == "http://127.0.0.1:6111"


def test_models_of_the_fleet_are_distinct_and_of_one_agent_are_its_own():
    registry = load_registry_file(DEFAULT_REGISTRY_PATH)
    assert [m.model_id for m in registry.models()] == ["ref-standard", "ref-fast", "ref-large"]
    assert [m.model_id for m in registry.models("dir-data")] == ["ref-standard", "ref-large"]
    assert registry.models("nobody") == []
    assert registry.get("nobody") is None


def test_to_dict_and_toml_writer_round_trip(tmp_path):
    registry = load_registry_file(DEFAULT_REGISTRY_PATH)
    path = tmp_path / "copy.toml"
    path.write_text(registry_to_toml(registry.to_dict()))
    assert load_registry_file(path).agents == registry.agents


def test_write_test_registry_moves_every_agent_to_a_free_port(tmp_path):
    copy = load_registry_file(write_test_registry(tmp_path / "agents.toml"))
    assert [a.agent_id for a in copy.agents] == ["architect", "dir-code", "dir-data", "dir-ops"]
    assert not {a.port for a in copy.agents} & {6110, 6111, 6112, 6113}
    assert len({a.port for a in copy.agents}) == 4


def test_duplicate_agent_id(tmp_path):
    with pytest.raises(RegistryError) as error:
        load_text(tmp_path, agent_toml("twin", "7001") + agent_toml("twin", "7002"))
    assert_one_sentence_naming(error.value, "agents.toml", "'twin'", "more than once")


@pytest.mark.parametrize(
    "port, words",
    [
        ("70000", ["70000", "not between 1 and 65535"]),
        ("0", ["port 0", "not between 1 and 65535"]),
        ('"6111"', ["'6111'", "not a whole number"]),
        ("true", ["True", "not a whole number"]),
    ],
)
def test_bad_port(tmp_path, port, words):
    with pytest.raises(RegistryError) as error:
        load_text(tmp_path, agent_toml("dir-code", port))
    assert_one_sentence_naming(error.value, "agents.toml", "agent 'dir-code'", *words)


def test_missing_port(tmp_path):
    with pytest.raises(RegistryError) as error:
        load_text(tmp_path, '[[agents]]\nagent_id = "portless"\n' + GOOD_MODEL)
    assert_one_sentence_naming(error.value, "agent 'portless'", "has no port")


def test_unknown_protocol(tmp_path):
    with pytest.raises(RegistryError) as error:
        load_text(tmp_path, agent_toml("odd", extra='protocol = "grpc"'))
    assert_one_sentence_naming(error.value, "agent 'odd'", "'grpc'", "native", "openai")


def test_model_without_context_window(tmp_path):
    models = '[[agents.models]]\nmodel_id = "tiny"\n'
    with pytest.raises(RegistryError) as error:
        load_text(tmp_path, agent_toml("dir-data", models=models))
    assert_one_sentence_naming(error.value, "model 'tiny'", "agent 'dir-data'", "context_window")


def test_duplicate_model_id_within_an_agent(tmp_path):
    with pytest.raises(RegistryError) as error:
        load_text(tmp_path, agent_toml("dir-ops", models=GOOD_MODEL + GOOD_MODEL))
    assert_one_sentence_naming(error.value, "agent 'dir-ops'", "model 'm1'", "more than once")


def test_same_model_id_on_two_agents_is_fine(tmp_path):
    registry = load_text(tmp_path, agent_toml("a", "7001") + agent_toml("b", "7002"))
    assert [m.model_id for m in registry.models()] == ["m1"]


def test_parent_role_naming_an_unknown_agent(tmp_path):
    with pytest.raises(RegistryError) as error:
        load_text(tmp_path, agent_toml("dir-code", extra='parent_role = "archtect"'))
    assert_one_sentence_naming(error.value, "agent 'dir-code'", "'archtect'", "not an agent")


def test_parent_loop(tmp_path):
    text = agent_toml("a", "7001", 'parent_role = "b"') + agent_toml("b", "7002", 'parent_role = "a"')
    with pytest.raises(RegistryError) as error:
        load_text(tmp_path, text)
    assert_one_sentence_naming(error.value, "own ancestor")


def test_missing_file(tmp_path):
    with pytest.raises(RegistryError) as error:
        load_registry_file(tmp_path / "nowhere.toml")
    assert_one_sentence_naming(error.value, "nowhere.toml", "does not exist")


def test_toml_syntax_error(tmp_path):
    with pytest.raises(RegistryError) as error:
        load_text(tmp_path, '[[agents]]\nagent_id = "broken\nport = 1\n')
    assert_one_sentence_naming(error.value, "agents.toml", "not valid TOML", "line 2")


def test_from_dict_names_its_source():
    with pytest.raises(RegistryError) as error:
        Registry.from_dict({"agents": [{"agent_id": "x", "port": 99999, "models": []}]}, "http://registry.test/agents")
    assert str(error.value).startswith("http://registry.test/agents: agent 'x'")


# --- RegistrySource ---------------------------------------------------------------------


def registry_json(port: int) -> bytes:
    return json.dumps(
        {
            "agents": [
                {
                    "agent_id": "remote-1",
                    "name": "Remote",
                    "parent_role": "",
                    "port": port,
                    "protocol": "native",
                    "models": [{"model_id": "m", "context_window": 100}],
                }
            ]
        }
    ).encode()


def test_remote_registry_is_cached_and_keeps_last_good_copy():
    with LocalHTTPServer() as server:
        server.respond("/agents", 200, registry_json(7100), "application/json")
        source = RegistrySource(url=server.url, ttl=0)
        assert source.current().get("remote-1").port == 7100

        server.respond("/agents", 200, registry_json(7200), "application/json")
        assert source.current().get("remote-1").port == 7200  # ttl 0: asked again

        server.respond("/agents", 500, b"boom", "text/plain")
        assert source.current().get("remote-1").port == 7200  # error: last good copy

        server.respond("/agents", 200, b'{"agents": [{"agent_id": "bad"}]}', "application/json")
        assert source.current().get("remote-1").port == 7200  # invalid: last good copy
        hits_before_outage = server.hits("/agents")
    # The service is gone now: still the last good copy.
    assert source.current().get("remote-1").port == 7200
    assert hits_before_outage == 4


def test_remote_registry_respects_ttl():
    with LocalHTTPServer() as server:
        server.respond("/agents", 200, registry_json(7100), "application/json")
        source = RegistrySource(url=server.url, ttl=3600)
        source.current()
        source.current()
        assert server.hits("/agents") == 1


def test_remote_registry_that_never_answered_raises():
    with LocalHTTPServer() as server:
        url = server.url
    source = RegistrySource(url=url, ttl=0)
    with pytest.raises(RegistryError) as error:
        source.current()
    assert_one_sentence_naming(error.value, f"{url}/agents", "cannot be reached")


def test_remote_registry_does_not_follow_redirects():
    with LocalHTTPServer() as server:
        server.redirect("/agents", "/elsewhere")
        server.respond("/elsewhere", 200, registry_json(7100), "application/json")
        with pytest.raises(RegistryError) as error:
            RegistrySource(url=server.url).current()
        assert "HTTP 302" in str(error.value)
        assert server.hits("/elsewhere") == 0


def test_file_source_rereads_a_changed_file_and_survives_a_broken_edit(tmp_path):
    path = tmp_path / "agents.toml"
    path.write_text(agent_toml("first", "7001"))
    source = RegistrySource(path=path)
    assert source.current().get("first") is not None
    source._next_check = 0  # skip the half-second re-stat pause
    path.write_text(agent_toml("second", "7002") + "\n# longer file, new stamp\n")
    assert source.current().get("second") is not None
    source._next_check = 0
    path.write_text("[[agents]\nthis is broken")
    assert source.current().get("second") is not None


def test_a_model_may_name_its_tokenizer(tmp_path):
    models = GOOD_MODEL + 'tokenizer = "cl100k_base"\n'
    model = load_text(tmp_path, agent_toml(models=models)).get("a1").models[0]
    assert model.tokenizer == "cl100k_base"
    assert load_text(tmp_path, agent_toml()).get("a1").models[0].tokenizer is None
    with pytest.raises(RegistryError) as error:
        load_text(tmp_path, agent_toml(models=GOOD_MODEL + "tokenizer = 7\n"))
    assert_one_sentence_naming(error.value, "m1", "tokenizer")
