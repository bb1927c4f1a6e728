"""FastAPI dependencies: collaborators come from `app.state.services`, never globals.

`Services` is filled once by the lifespan in `app.py`; routes ask for the one
collaborator they need through the `Annotated` aliases below.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from ziggurat.config import Settings
from ziggurat.connection.broker.base import Broker
from ziggurat.service.generation import GenerationService
from ziggurat.service.health import HealthService
from ziggurat.service.metrics import Metrics

if TYPE_CHECKING:
    from ziggurat.application.container import Application
    from ziggurat.connection.worker import Worker
    from ziggurat.model.engine import Engine


@dataclass(slots=True)
class Services:
    settings: Settings
    metrics: Metrics
    broker: Broker
    generation: GenerationService
    health: HealthService
    application: Application
    engines: list[Engine] = field(default_factory=list)
    workers: list[Worker] = field(default_factory=list)


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def get_generation(request: Request) -> GenerationService:
    return get_services(request).generation


def get_metrics(request: Request) -> Metrics:
    return get_services(request).metrics


ServicesDep = Annotated[Services, Depends(get_services)]
GenerationDep = Annotated[GenerationService, Depends(get_generation)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
