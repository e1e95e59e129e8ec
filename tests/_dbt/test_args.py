from __future__ import annotations

from dbtbus._dbt.args import exclude_args, node_selector, rerun_args, resume_args, strip_selection


def test_strip_selection() -> None:
    args = ["build", "--project-dir", "p", "--select", "a", "b", "--exclude=c", "-x", "--full-refresh",
            "--vars", "{shop_break: true}", "--log-format", "json", "--target", "dev"]
    command, rest = strip_selection(args)
    assert command == "build"
    assert rest == ["--project-dir", "p", "--full-refresh", "--vars", "{shop_break: true}", "--target", "dev"]


def test_node_selector() -> None:
    assert node_selector("model.shop.stg_orders") == "resource_type:model,package:shop,stg_orders"
    assert node_selector("seed.shop.customers") == "resource_type:seed,package:shop,customers"
    assert node_selector("test.shop.not_null_stg_orders_order_id.81cfe2fe64") == (
        "resource_type:test,package:shop,not_null_stg_orders_order_id")
    assert node_selector("test.shop.assert_x") == "resource_type:test,package:shop,assert_x"


def test_rerun_args_keep_the_producers_flags() -> None:
    producer = ["build", "--project-dir", "p", "--full-refresh", "--select", "tag:x", "--vars", "{a: 1}"]
    assert rerun_args(producer, "model.shop.orders", include_tests=True) == [
        "build", "--select", "resource_type:model,package:shop,orders",
        "--project-dir", "p", "--full-refresh", "--vars", "{a: 1}",
    ]
    seed = rerun_args(producer, "seed.shop.customers", include_tests=False)
    assert seed[:3] == ["seed", "--select", "resource_type:seed,package:shop,customers"]
    assert rerun_args(producer, "model.shop.orders", include_tests=False)[0] == "run"


def test_exclude_args() -> None:
    assert exclude_args(["build"], []) == ["build"]
    assert exclude_args(["build"], ["shop.a", "shop.b"]) == ["build", "--exclude", "shop.a", "shop.b"]


def test_exclude_args_merge_into_the_users_exclude() -> None:
    """dbt keeps only the last --exclude: a second one would silently build what the user excluded."""
    assert exclude_args(["build", "--exclude", "tag:slow", "x", "--target", "dev"], ["shop.a"]) == [
        "build", "--exclude", "tag:slow", "x", "shop.a", "--target", "dev"]
    assert exclude_args(["build", "--exclude=tag:slow"], ["shop.a"]) == ["build", "--exclude", "tag:slow", "shop.a"]
    assert exclude_args(["build", "--exclude"], ["shop.a"]) == ["build", "--exclude", "shop.a"]


def test_resume_args_leave_out_what_succeeded() -> None:
    import anyio

    from dbtbus import RunState
    from dbtbus.testing import EventFactory

    async def scenario() -> RunState:
        run = await EventFactory("memory://resume-args").run("r", graph=None)
        await run.succeed("model.shop.a")
        await run.fail("model.shop.b")
        await run.finish()
        return run.state

    state = anyio.run(scenario)
    args, done = resume_args(state, ["build", "--target", "dev"])
    assert done == ["model.shop.a"]
    assert args == ["build", "--target", "dev", "--exclude", "resource_type:model,package:shop,a"]
