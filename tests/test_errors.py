"""Every mistake a user can make is a GridVLMError whose message names the input and what would work."""

import pytest

import gridvlm
from gridvlm import GridVLMError, ImageError, PlanError


def test_error_hierarchy():
    assert issubclass(PlanError, GridVLMError) and issubclass(ImageError, GridVLMError)
    assert issubclass(GridVLMError, ValueError)


def test_unknown_strategy_lists_the_known_ones():
    with pytest.raises(PlanError, match="llava-next"):
        gridvlm.plan((100, 100), "llava-9000")


@pytest.mark.parametrize("size", [(0, 10), (10, -1), (1.5, 10), ("a", 10), (10,), None, (True, 5), (10**7, 10)])
def test_bad_sizes(size):
    with pytest.raises(PlanError, match="image|size"):
        gridvlm.plan(size, "llava-next")


def test_unknown_parameter_names_the_valid_ones():
    with pytest.raises(PlanError, match="max_tiles"):
        gridvlm.plan((100, 100), "internvl", max_tile=3)


@pytest.mark.parametrize(
    "strategy,params,fragment",
    [
        ("internvl", {"max_tiles": "six"}, "whole number"),
        ("internvl", {"max_tiles": 0}, "between"),
        ("internvl", {"min_tiles": 5, "max_tiles": 2}, "must not exceed"),
        ("llava-1.5", {"mode": "stretch"}, "'pad', 'crop'"),
        ("llava-next", {"grid_pinpoints": [[336, 500]]}, "multiples of tile_size"),
        ("llava-next", {"grid_pinpoints": []}, "must not be empty"),
        ("qwen2-vl", {"min_pixels": 10**6, "max_pixels": 10**5}, "must not exceed"),
        ("fixed-grid", {"overlap": 300}, "overlap"),
        ("fixed-grid", {"rows": 5, "cols": 5}, "max_tiles"),
        ("deepseek-vl2", {"cropping": "yes"}, "true or false"),
    ],
)
def test_bad_parameters(strategy, params, fragment):
    with pytest.raises(PlanError, match=fragment):
        gridvlm.plan((1000, 800), strategy, **params)


@pytest.mark.parametrize("name", gridvlm.list_strategies())
def test_strategy_info_describes_every_parameter(name):
    info = gridvlm.strategy_info(name)
    assert info.summary and info.reference and info.family
    for spec in info.params.values():
        assert spec.help
        assert spec.default is None or isinstance(spec.default, spec.type)
        assert spec.range is None or spec.kind in ("int", "float")
    assert gridvlm.plan((640, 480), name, **info.defaults).params == info.defaults


def test_families_partition_the_strategies_in_listing_order():
    families = gridvlm.list_families()
    grouped = [name for family in families for name in gridvlm.list_strategies(family)]
    assert sorted(grouped) == sorted(gridvlm.list_strategies())
    assert len(set(families)) == len(families)
    for family in families:
        names = gridvlm.list_strategies(family)
        assert names and names == [n for n in gridvlm.list_strategies() if gridvlm.strategy_info(n).family == family]
