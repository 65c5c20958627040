"""job arrays and dependencies

job.array / array_tasks / array_width: a job array as submitted, its task count and how
many tasks may run at once; job.depends_on: the jobs it waits for, as submitted;
job.cancel_reason: why the broker cancelled it (a dependency that can no longer be met).
job_task: one row per task of an array; job_dependency: the dependencies, for queries.
partition.max_array_tasks: the most tasks an array may have there.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04 14:40:00
"""

from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = "0014"
down_revision: Union[str, None] = "0013"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

_JOB_STATES = (
    "accepted",
    "rejected",
    "pending",
    "running",
    "suspended",
    "completed",
    "failed",
    "cancelled",
    "timeout",
    "node_fail",
    "boot_fail",
    "preempted",
    "out_of_memory",
    "unknown",
)


def upgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("cancel_reason", sa.String(length=300), server_default="", nullable=False)
        )
        batch_op.add_column(sa.Column("array", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("array_tasks", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("array_width", sa.Integer(), server_default="1", nullable=False)
        )
        batch_op.add_column(sa.Column("depends_on", sa.JSON(), server_default="[]", nullable=False))
    with op.batch_alter_table("partition", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("max_array_tasks", sa.Integer(), server_default="1000", nullable=False)
        )
    op.create_table(
        "job_task",
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("index", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column(
            "state",
            sa.Enum(*_JOB_STATES, name="jobstatus", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("native_state", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=1000), nullable=False),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("node_list", sa.JSON(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("elapsed_s", sa.Integer(), nullable=True),
        sa.Column("charge_units", sa.BigInteger(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["job.id"]),
        sa.PrimaryKeyConstraint("job_id", "index"),
    )
    op.create_table(
        "job_dependency",
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("parent_id", sa.Uuid(), nullable=False),
        sa.Column(
            "condition",
            sa.Enum(
                "afterok",
                "afterany",
                "afternotok",
                name="dependencycondition",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(["job_id"], ["job.id"]),
        sa.ForeignKeyConstraint(["parent_id"], ["job.id"]),
        sa.PrimaryKeyConstraint("job_id", "parent_id"),
    )
    with op.batch_alter_table("job_dependency", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_job_dependency_parent_id"), ["parent_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("job_dependency", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_job_dependency_parent_id"))
    op.drop_table("job_dependency")
    op.drop_table("job_task")
    with op.batch_alter_table("partition", schema=None) as batch_op:
        batch_op.drop_column("max_array_tasks")
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_column("depends_on")
        batch_op.drop_column("array_width")
        batch_op.drop_column("array_tasks")
        batch_op.drop_column("array")
        batch_op.drop_column("cancel_reason")
