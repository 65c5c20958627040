"""Who is calling: the identity every service function checks its rules against."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from ..errors import NotFound, PermissionDenied
from ..models import Role

STAFF_ROLES = frozenset({Role.OPERATOR, Role.CLUSTER_ADMIN})


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: a token's role and, for tenants, its enterprise."""

    token_id: uuid.UUID | None
    name: str
    role: Role
    enterprise_id: uuid.UUID | None = None

    @property
    def actor(self) -> str:
        return f"{self.role.value}:{self.name}"

    @property
    def is_staff(self) -> bool:
        return self.role in STAFF_ROLES

    def can_see(self, enterprise_id: uuid.UUID) -> bool:
        return self.is_staff or self.enterprise_id == enterprise_id

    def check_visible(self, enterprise_id: uuid.UUID, what: str) -> None:
        """Another tenant's objects do not exist for the caller: NotFound, not Forbidden."""
        if not self.can_see(enterprise_id):
            raise NotFound(f"{what} not found")

    def require_operator(self) -> None:
        if self.role is not Role.OPERATOR:
            raise PermissionDenied("this action needs an operator token")

    def require_staff(self) -> None:
        if not self.is_staff:
            raise PermissionDenied("this action needs an operator or cluster admin token")

    def require_enterprise_admin(self, enterprise_id: uuid.UUID, what: str) -> None:
        """Operators, or admins of this very enterprise."""
        self.check_visible(enterprise_id, what)
        if self.role is Role.OPERATOR:
            return
        if self.role is not Role.ADMIN:
            raise PermissionDenied("this action needs an enterprise admin or operator token")

    def require_member_of(self, enterprise_id: uuid.UUID, what: str) -> None:
        """A member or admin of this enterprise (staff do not submit tenants' work)."""
        self.check_visible(enterprise_id, what)
        if self.enterprise_id != enterprise_id:
            raise PermissionDenied("only members of the project's enterprise may do this")


SYSTEM = Principal(token_id=None, name="system", role=Role.OPERATOR)
