

def test_plan_gives_the_bounds_of_an_adaptive_cell_and_says_adaptive(tmp_path: Path):
    from rich.console import Console

    from harness.app.plan import cell_json, print_plan

    path = tmp_path / "a.yaml"
    path.write_text(SUITE)
    suite = load_suite(path)
    (cell,) = suite.cells
    found = cell_json(cell)
    # 512 examples: 16 steps an epoch at B = 32, 2 at b_max = 256; decisions after epochs 1-4.
    assert found["realization"] == "adaptive" and found["updates"] is None
    assert found["adaptive"]["updates_max"] == 5 * 16
    assert found["adaptive"]["updates_min"] == 16 + 4 * 2
    assert found["adaptive"]["decision_epochs"] == [1, 2, 3, 4]
    console = Console(record=True, width=200)
    print_plan(suite, suite.cells, console)
    text = console.export_text()
    assert "adaptive: B follows 1 x the measured B_simple" in text
    assert "between 24 updates (B = 256 from epoch 1) and 80 (B never grows" in text
