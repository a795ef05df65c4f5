"""KD methods as plug-ins: one registry, a contract every method meets, method files of a student's own,
and method knobs that behave like every other knob."""

import textwrap

import pytest
import torch

from helpers import config, kd, methods
from helpers.core.errors import UserError
from helpers.kd import registry
from helpers.report import docs


@pytest.fixture
def scratch_registry():
    """Methods registered by a test are removed after it (the built-ins stay)."""
    before = dict(registry.REGISTRY)
    yield
    registry.REGISTRY.clear()
    registry.REGISTRY.update(before)


def method_file(tmp_path, body: str, name: str = "my_kd.py"):
    path = tmp_path / name
    path.write_text("from helpers.methods import register\n\n" + textwrap.dedent(body))
    return path


LOGIT_MSE = """
@register("logit_mse", label="Logit MSE", teacher="logits", knobs={"gamma": 1.0})
def logit_mse(s, t, target, cfg):
    valid = (target != 255).unsqueeze(1)
    return cfg.gamma * ((s.logits - t.logits) ** 2 * valid).sum() / valid.sum().clamp(min=1)
"""


def test_the_built_in_methods_are_the_three_families_and_the_guide_keeps_three_rows():
    built_in = ["baseline", "baseline_matched", "response", "feature", "pairwise"]
    assert kd.registered()[:5] == built_in
    families = {m: kd.get(m).teacher for m in built_in}
    assert families == {
        "baseline": None,
        "baseline_matched": None,
        "response": "logits",
        "feature": "feature",
        "pairwise": "feature",
    }
    assert kd.get("baseline_matched").match_compute and kd.get("baseline_matched").loss is None
    assert kd.get("feature").adapter and not kd.get("pairwise").adapter  # relations need no channel match
    assert config.Config().students == ["baseline", "response", "feature"]  # the guide's table by default
    for m in built_in[2:]:
        assert kd.get(m).paper and kd.get(m).weight in kd.get(m).knobs


@pytest.mark.parametrize("name", ["baseline", "baseline_matched", "response", "feature", "pairwise"])
def test_every_built_in_method_meets_the_contract(name):
    results = kd.check(name)
    assert all(ok for _, ok, _ in results), results
    assert "✓ finite loss" in kd.check_method(name)


def test_the_contract_catches_a_method_that_learns_from_void_pixels(scratch_registry):
    @methods.register("leaky", label="Leaky", teacher="logits")
    def leaky(s, t, target, cfg):  # reads the target but averages over every pixel, void included
        weight = (target != 255).float().mean()
        return weight * ((s.logits - t.logits) ** 2).mean()

    results = {what: ok for what, ok, _ in kd.check("leaky")}
    assert results["void pixels send no gradient"] is False and results["a gradient reaches the student"]
    with pytest.raises(UserError, match="'leaky' .* breaks the contract: void pixels send no gradient"):
        kd.check_method("leaky")


def test_the_contract_catches_a_method_that_trains_nothing_or_diverges(scratch_registry):
    @methods.register("constant", label="Constant", teacher="logits")
    def constant(s, t, target, cfg):
        return torch.tensor(1.0)

    @methods.register("infinite", label="Infinite", teacher="logits")
    def infinite(s, t, target, cfg):
        return (s.logits * 0).sum() + float("inf")

    assert dict((w, ok) for w, ok, _ in kd.check("constant"))["a gradient reaches the student"] is False
    assert dict((w, ok) for w, ok, _ in kd.check("infinite"))["finite loss"] is False


def test_a_method_may_return_named_parts_and_each_is_logged(scratch_registry):
    @methods.register("two_parts", label="Two parts", teacher="both", knobs={"mix": 0.5})
    def two_parts(s, t, target, cfg):
        return {"logit": cfg.mix * (s.logits - t.logits).pow(2).mean(), "feat": s.feature.mean() * 0}

    s, t = (torch.randn(2, 21, 8, 8), torch.randn(2, 4, 2, 2)), (torch.randn(2, 21, 8, 8), torch.randn(2, 6, 2, 2))
    parts = kd.objective("two_parts", s, torch.zeros(2, 8, 8, dtype=torch.long), t, None, kd.contract.defaults())
    assert set(parts) == {"loss", "ce", "logit", "feat"}
    assert parts["loss"].item() == pytest.approx((parts["ce"] + parts["logit"] + parts["feat"]).item())


def test_register_refuses_what_it_cannot_serve(scratch_registry):
    with pytest.raises(UserError, match="teacher='logit'; choose one of"):
        methods.register("typo", label="T", teacher="logit")
    with pytest.raises(UserError, match="lower-case letters"):
        methods.register("My Method", label="M")
    with pytest.raises(UserError, match="weight='alpha' must be one of its own knobs"):
        methods.register("borrower", label="B", weight="alpha")
    with pytest.raises(UserError, match="the knob 'alpha' of method 'mine' is already a knob of 'response'"):
        methods.register("mine", label="M", knobs={"alpha": 2.0})(lambda s, t, y, cfg: 0)


def test_method_files_are_imported_and_their_mistakes_named(tmp_path, scratch_registry):
    good = method_file(tmp_path, LOGIT_MSE)
    cfg = config.from_preset(
        "smoke", {"method_files": str(good), "students": "baseline,response,logit_mse", "gamma": 2}
    )
    assert cfg.students == ["baseline", "response", "logit_mse"] and cfg.gamma == 2.0  # an int becomes a float
    assert cfg.to_dict()["gamma"] == 2.0 and kd.get("logit_mse").source == config.knobs.paths.portable(good)
    assert all(ok for _, ok, _ in kd.check("logit_mse", cfg))

    broken = method_file(tmp_path, "x = 1\nraise RuntimeError('oops')\n", "broken.py")
    with pytest.raises(UserError, match=r"'.*broken.py' failed to import \(line 4\): RuntimeError: oops"):
        config.from_preset("smoke", {"method_files": str(broken)})
    with pytest.raises(UserError, match="not a .py file"):
        config.from_preset("smoke", {"method_files": str(tmp_path / "missing.py")})
    twice = method_file(tmp_path, LOGIT_MSE, "again.py")
    with pytest.raises(UserError, match="'logit_mse' is registered twice: by .*my_kd.py and by .*again.py"):
        config.from_preset("smoke", {"method_files": f"{good},{twice}"})
    with pytest.raises(UserError, match="'logit_mes' is not a registered KD method \\(did you mean 'logit_mse'"):
        config.from_preset("smoke", {"method_files": str(good), "students": "baseline,logit_mes"})
    with pytest.raises(UserError, match="Unknown parameter 'gama' \\(did you mean 'gamma'"):
        config.from_preset("smoke", {"method_files": str(good), "gama": 1})
    with pytest.raises(UserError, match="Parameter 'gamma' must be float"):
        config.from_preset("smoke", {"method_files": str(good), "gamma": "high"})


def test_a_method_knob_named_like_a_study_knob_is_refused(tmp_path, scratch_registry):
    clash = method_file(
        tmp_path,
        """
    @register("clash", label="Clash", knobs={"epochs": 3})
    def clash(s, t, target, cfg):
        return s.logits.mean() * 0
    """,
    )
    with pytest.raises(UserError, match="the knob 'epochs' of method 'clash' has the name of a knob of the study"):
        config.from_preset("smoke", {"method_files": str(clash)})


def test_students_start_with_the_baseline_once():
    with pytest.raises(UserError, match="'baseline' first"):
        config.from_preset("smoke", {"students": "response,baseline"})
    with pytest.raises(UserError, match="each method once"):
        config.from_preset("smoke", {"students": "baseline,response,response"})


def test_method_knobs_are_listed_in_the_docs_when_their_file_is_imported(tmp_path, scratch_registry):
    page = docs.parameters_page()
    assert "| `pairwise_weight` |" in page and "(method: pairwise)" in page and "`gamma`" not in page
    path = method_file(tmp_path, LOGIT_MSE)
    config.from_preset("smoke", {"method_files": str(path)})
    assert "| `gamma` | `1.0` |  |  (method: logit_mse) |" in docs.parameters_page([path])
    assert "`gamma`" not in docs.parameters_page() and "gamma" not in config.Config().to_dict()  # other studies'


def test_a_method_registered_outside_a_method_file_is_not_part_of_a_study(scratch_registry):
    @methods.register("cell_only", label="Cell only", teacher="logits", knobs={"zeta": 1.0})
    def cell_only(s, t, target, cfg):
        return (s.logits - t.logits).pow(2).mean()

    assert all(ok for _, ok, _ in kd.check("cell_only"))  # it can be checked ...
    with pytest.raises(
        UserError, match="'cell_only' is registered by .*test_methods, which is not one of method_files"
    ):
        config.from_preset("smoke", {"students": "baseline,cell_only"})  # ... but a study names its file


def test_a_method_cell_becomes_a_file_other_processes_import(tmp_path, monkeypatch, scratch_registry):
    monkeypatch.setenv("KDSEG_ROOT", str(tmp_path))
    path = methods.save("from helpers.methods import register\n" + LOGIT_MSE)
    assert path == "checkpoints/methods/my_kd.py" and (tmp_path / path).is_file()  # root-relative
    other = LOGIT_MSE.replace('"logit_mse"', '"logit_mse2"').replace("gamma", "gamma2")
    elsewhere = methods.save("from helpers.methods import register\n" + other, tmp_path / "other" / "kd.py")
    assert elsewhere == "other/kd.py" and kd.get("logit_mse2").source == "other/kd.py"
    assert kd.get("logit_mse").label == "Logit MSE"
    methods.save("from helpers.methods import register\n" + LOGIT_MSE.replace("Logit MSE", "Logit MSE v2"))
    assert kd.get("logit_mse").label == "Logit MSE v2"  # a cell run again replaces its method
