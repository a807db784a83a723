import pytest

from gnnhydro.registry import Registry


def test_register_get_and_errors():
    reg: Registry[type] = Registry("widget")

    @reg.register("Round")
    class Round:
        pass

    assert reg.get("round") is Round and reg["ROUND"] is Round
    assert Round.registry_name == "round"
    assert "round" in reg and "square" not in reg
    assert reg.names() == ["round"] and len(reg) == 1
    with pytest.raises(ValueError, match="unknown widget 'square'.*round"):
        reg.get("square")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("round")(type("Other", (), {}))
    reg.register("round")(Round)  # registering the same object again is fine


def test_entry_points_are_read_on_a_miss(monkeypatch):
    import gnnhydro.registry as registry_module

    class FakeEntryPoint:
        name = "plugin"

        def load(self):
            return dict

    monkeypatch.setattr(
        registry_module, "entry_points", lambda group: [FakeEntryPoint()] if group == "g" else []
    )
    reg: Registry[type] = Registry("thing", entry_point_group="g")
    assert reg.get("plugin") is dict
