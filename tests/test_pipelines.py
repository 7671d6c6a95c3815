"""The pipeline catalog ships the seeds' stages, in order, and refuses a broken file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from config.pipelines import PipelineError, UnknownStage, load_catalog
from config.settings import DEFAULT_PIPELINES_FILE

SEED_STAGES = {
    "mantenimiento": ["Abierto", "Cita agendada", "Cotización solicitada", "Enviado a cliente",
                      "En servicio", "Entrega vehículo", "Cerrado", "Cancelado"],
    "servicio": ["Solicitado", "Levantado", "Cita confirmada", "Notificado usuario",
                 "Cotización solicitada", "Cotizado", "Enviado a cliente", "Aprobado", "Rechazado",
                 "En servicio", "Solicitud pago", "Pagado", "Finalizado", "Facturado"],
    "gestorias": ["Abierto", "Verificaciones", "Esperando información cliente", "Integración expediente",
                  "Pago pendiente", "En espera de cita", "Cita agendada", "Trámite ingresado",
                  "Trámite realizado", "Facturación / entrega", "Cerrado"],
    "seguros": ["Abierto", "Esperando información cliente", "Cotización", "Aprobación", "Emisión",
                "Facturación / entrega", "Cerrado"],
    "siniestros": ["Abierto", "Esperando información cliente", "Gestorías del siniestro",
                   "Solicitud trámite", "Valuación aseguradora", "Esperando refacciones", "En reparación",
                   "Aplicación deducible", "Trámite completado", "Finiquito aseguradora",
                   "Facturación / entrega", "Pago", "Saldo Insoluto", "Cerrado"],
    "tecnologia": ["Nuevo", "En proceso", "Pendiente", "Cerrado"],
}


def test_the_shipped_catalog_has_exactly_the_seeds_stages_in_order() -> None:
    catalog = load_catalog(DEFAULT_PIPELINES_FILE)
    assert {pid: p.names() for pid, p in catalog.items()} == SEED_STAGES


def test_cerrado_is_closed_everywhere_including_tecnologia() -> None:
    catalog = load_catalog(DEFAULT_PIPELINES_FILE)
    for pipeline in catalog.values():
        for stage in pipeline.stages:
            if stage.name == "Cerrado":
                assert stage.state == "Cerrado" and stage.terminal, pipeline.id
    assert catalog["tecnologia"].stage("Cerrado").portal_status() == "Cerrado-Cerrado"


def test_every_stage_has_a_spanish_description_and_closing_stages_send_the_survey() -> None:
    catalog = load_catalog(DEFAULT_PIPELINES_FILE)
    attention = [p for p in catalog.values() if p.id != "servicio"]
    for pipeline in attention:
        assert pipeline.first.notify, f"{pipeline.id}: a new ticket is acknowledged"
    for pipeline in catalog.values():
        for stage in pipeline.stages:
            assert stage.description
    assert all(p.stage("Cerrado").survey for p in attention)


def test_stage_lookup_folds_case_and_spacing_and_lists_valid_stages_on_error() -> None:
    pipeline = load_catalog(DEFAULT_PIPELINES_FILE)["mantenimiento"]
    assert pipeline.stage("  cita   AGENDADA ").name == "Cita agendada"
    with pytest.raises(UnknownStage) as err:
        pipeline.stage("Cita")
    assert "Cita agendada" in str(err.value) and "Entrega vehículo" in str(err.value)


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "pipelines.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["seguros"]["stages"][2].update(state="Abiertx"), "seguros, stage 3 (Cotización): state"),
        (lambda d: d["gestorias"]["stages"][1].pop("name"), "gestorias, stage 2: stage without a name"),
        (lambda d: d["siniestros"]["stages"][4].update(notify="yes"), "Valuación aseguradora): 'notify'"),
        (lambda d: d["tecnologia"]["stages"][3].update(state="Abierto"), "tecnologia, stage Cerrado: a terminal"),
        (lambda d: d["seguros"]["stages"].append(dict(d["seguros"]["stages"][0])), "seguros, stage Abierto: the name"),
        (lambda d: d["mantenimiento"]["stages"][1].update(colour="red"), "mantenimiento, stage 2 (Cita agendada)"),
        (lambda d: d["servicio"].update(stages=[]), "servicio: has no stages"),
    ],
)
def test_a_broken_file_names_the_pipeline_and_stage_at_fault(tmp_path: Path, mutate, expected: str) -> None:
    data = yaml.safe_load(DEFAULT_PIPELINES_FILE.read_text(encoding="utf-8"))
    mutate(data)
    with pytest.raises(PipelineError) as err:
        load_catalog(_write(tmp_path, data))
    assert expected in str(err.value)


def test_unreadable_and_invalid_yaml_are_clear(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="cannot read"):
        load_catalog(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("mantenimiento: [\n", encoding="utf-8")
    with pytest.raises(PipelineError, match="not valid YAML"):
        load_catalog(bad)


def test_an_operator_can_extend_the_catalog(tmp_path: Path) -> None:
    data = yaml.safe_load(DEFAULT_PIPELINES_FILE.read_text(encoding="utf-8"))
    data["seguros"]["stages"].insert(3, {"name": "Revisión legal", "state": "Abierto", "role": "area_team"})
    catalog = load_catalog(_write(tmp_path, data))
    assert catalog["seguros"].names()[3] == "Revisión legal"
