"""The ``helpdesk`` CLI, run as a real process, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from config.settings import DEFAULT_PIPELINES_FILE
from tests.cli_helpers import helpdesk, helpdesk_json
from tests.test_pipelines import SEED_STAGES


def test_open_stage_show_gives_the_portal_status_history_and_one_notification(cli_env) -> None:
    number = helpdesk_json(
        cli_env, "open", "--pipeline", "mantenimiento", "--email", "ana@example.com",
        "--subject", "Servicio preventivo", "--text", "El auto hace ruido al frenar",
    )["number"]
    out = helpdesk(cli_env, "stage", str(number), "Cita agendada", "--by", "ae@jhleasing.mx").stdout
    assert "Abierto-Cita agendada" in out
    shown = helpdesk_json(cli_env, "show", str(number))
    assert shown["number"] == number
    assert shown["portal_status"] == "Abierto-Cita agendada"
    assert (shown["stage"], shown["state"], shown["pipeline"], shown["kind"]) == (
        "Cita agendada", "Abierto", "mantenimiento", "attention")
    assert shown["requester"] == {"name": None, "email": "ana@example.com", "phone": None}
    history = [(h["from"], h["to"], h["by"]) for h in shown["history"]]
    assert history == [("Abierto", "Cita agendada", "ae@jhleasing.mx")]
    notifications = [(n["channel"], n["template"], n["status"]) for n in shown["notifications"]]
    assert notifications == [("email", "stage", "pending")]
    [msg] = shown["messages"]
    assert msg["text"] == "El auto hace ruido al frenar" and msg["direction"] == "in"
    for key in ("channel", "sender", "subject", "message_id", "created_at"):
        assert key in msg
    listed = helpdesk_json(cli_env, "tickets", "--open")
    assert [t["number"] for t in listed] == [number]
    assert set(listed[0]) >= {"number", "stage", "state", "portal_status", "requester"}


def test_pipelines_json_lists_the_seeds_stages(cli_env) -> None:
    data = helpdesk_json(cli_env, "pipelines")
    assert {pid: [s["name"] for s in stages] for pid, stages in data.items()} == SEED_STAGES
    first = data["mantenimiento"][0]
    assert set(first) >= {"name", "state", "notify", "terminal"}


def test_a_wrong_stage_lists_the_valid_ones_in_one_line(cli_env) -> None:
    number = helpdesk_json(cli_env, "open", "--pipeline", "seguros", "--phone", "55 1234 5678",
                           "--subject", "Póliza", "--text", "Renovar póliza")["number"]
    proc = helpdesk(cli_env, "stage", str(number), "Cita agendada", check=False)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "valid stages: Abierto, Esperando información cliente, Cotización" in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show", "999999"], "no ticket 999999"),
        (["open", "--pipeline", "flotas", "--email", "a@b.mx", "--subject", "x", "--text", "y"],
         "unknown pipeline 'flotas'; valid pipelines: mantenimiento"),
        (["open", "--pipeline", "seguros", "--phone", "hola", "--subject", "x", "--text", "y"], "not a phone"),
        (["open", "--pipeline", "seguros", "--subject", "x", "--text", "y"], "give --email or --phone"),
        (["outbox", "--retry", "12345"], "no notification 12345"),
    ],
)
def test_errors_are_one_clear_line_without_traceback(cli_env, args: list[str], message: str) -> None:
    proc = helpdesk(cli_env, *args, check=False)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_reply_queues_a_message_on_the_requesters_channel(cli_env) -> None:
    number = helpdesk_json(cli_env, "open", "--pipeline", "tecnologia", "--phone", "+5215512345678",
                           "--name", "Beto", "--subject", "Portal", "--text", "No puedo entrar", "--ack")["number"]
    helpdesk(cli_env, "reply", str(number), "--text", "Ya restablecimos tu acceso", "--by", "it@jhleasing.mx")
    shown = helpdesk_json(cli_env, "show", str(number))
    assert shown["requester"]["phone"] == "+525512345678"
    assert [n["template"] for n in shown["notifications"]] == ["ack", "reply"]
    assert all(n["channel"] == "whatsapp" for n in shown["notifications"])
    assert shown["messages"][-1]["direction"] == "out"
    rows = helpdesk_json(cli_env, "outbox")
    assert {r["template"] for r in rows} == {"ack", "reply"}


def test_a_broken_pipelines_file_fails_at_start_naming_the_stage(cli_env, tmp_path) -> None:
    text = DEFAULT_PIPELINES_FILE.read_text(encoding="utf-8").replace(
        "name: Valuación aseguradora\n      description: La aseguradora está realizando la valuación.\n"
        "      state: Abierto", "name: Valuación aseguradora\n      description: x\n      state: Abierta", 1)
    broken = tmp_path / "pipelines.yaml"
    broken.write_text(text, encoding="utf-8")
    proc = helpdesk({**cli_env, "HELPDESK_PIPELINES_FILE": str(broken)}, "pipelines", check=False)
    assert proc.returncode == 1
    assert "pipeline siniestros, stage 5 (Valuación aseguradora): state must be one of" in proc.stderr
