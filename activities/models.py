"""The trip-package saga's data: one pydantic model per request and per booking."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

City = Literal["Lisbon", "Paris", "Rome", "Venice"]

#: Simulated faults a request can carry, for demos and tests: "down" fails every
#: booking attempt (the service is unreachable; its cancel fails once, then it is
#: back), "flaky" fails the first attempt only,
#: "slow" answers after a second (heartbeating, so a cancellation can reach it),
#: "no_refund" books but refuses every cancel for good (an airline after departure):
#: the saga then waits for a human; "zombie": the first attempt stalls past its 10 s
#: timeout (no heartbeat), then books anyway, while a retry has taken its place (and
#: maybe been cancelled by then): the barrier keeps it from booking twice.
Fault = Literal["down", "flaky", "slow", "no_refund", "zombie"]

#: When the payment provider confirms a charge (a webhook, sent to the saga as its
#: ``payment`` event): "prompt" a moment after the charge, "early" before the charge's
#: activity even ends (kept until its step is due), "twice" (counted once), "late"
#: (after the saga stopped waiting: refused, the trip undone), "never" (likewise).
Confirmation = Literal["prompt", "early", "twice", "late", "never"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TripRequest(_Model):
    """A trip package to buy: a flight, hotel nights and attraction tickets."""

    traveller: str = Field(min_length=1)
    passport: str = Field(min_length=5)
    origin: City
    destination: City
    check_in: date
    nights: int = Field(ge=1, le=30)
    tickets: int = Field(default=1, ge=1, le=10)
    # Rent a car at the destination: a step served by the Node.js car-rental service.
    car: bool = False
    faults: dict[Literal["airline", "hotel", "attractions", "car-rental"], Fault] = Field(
        default_factory=dict
    )
    confirmation: Confirmation = "prompt"

    def payment(self, flight: FlightBooking) -> PaymentRequest:
        """The card payment for the trip: its flight, and a toy 100 euros a night."""
        return PaymentRequest(
            payer=self.traveller,
            city=self.destination,
            date=self.check_in,
            amount=flight.price + 100 * self.nights,
            confirmation=self.confirmation,
        )

    def flight(self) -> FlightRequest:
        return FlightRequest(
            passenger=self.traveller,
            passport=self.passport,
            origin=self.origin,
            destination=self.destination,
            date=self.check_in,
            fault=self.faults.get("airline"),
        )

    def hotel(self) -> HotelRequest:
        return HotelRequest(
            guest=self.traveller,
            city=self.destination,
            check_in=self.check_in,
            nights=self.nights,
            fault=self.faults.get("hotel"),
        )

    def insurance(self, flight: FlightBooking) -> InsuranceRequest:
        """Travel insurance for the trip, priced on its flight."""
        return InsuranceRequest(
            holder=self.traveller,
            city=self.destination,
            start=self.check_in,
            end=self.check_in + timedelta(days=self.nights),
            flight_price=flight.price,
        )

    def car_rental(self) -> CarRequest:
        return CarRequest(
            renter=self.traveller,
            city=self.destination,
            pickup=self.check_in,
            days=self.nights,
            fault=self.faults.get("car-rental"),
        )

    def attractions(self) -> TicketRequest:
        return TicketRequest(
            holder=self.traveller,
            city=self.destination,
            date=self.check_in + timedelta(days=1),
            count=self.tickets,
            fault=self.faults.get("attractions"),
        )


class FlightRequest(_Model):
    passenger: str
    passport: str
    origin: City
    destination: City
    date: date
    fault: Fault | None = None


class HotelRequest(_Model):
    guest: str
    city: City
    check_in: date
    nights: int
    fault: Fault | None = None


class TicketRequest(_Model):
    holder: str
    city: City
    date: date
    count: int
    fault: Fault | None = None


class CarRequest(_Model):
    """What the car-rental service (Node.js) takes: plain JSON, as any SDK reads it."""

    renter: str
    city: City
    pickup: date
    days: int
    fault: Fault | None = None


class PaymentRequest(_Model):
    payer: str
    city: City
    date: date
    amount: int  # euros
    confirmation: Confirmation = "prompt"


class PaymentConfirmation(_Model):
    """What the payment provider confirms (the trip saga's ``payment`` event)."""

    charge_id: str
    amount: int  # euros


class InsuranceRequest(_Model):
    holder: str
    city: City
    start: date
    end: date
    flight_price: int


class FlightBooking(_Model):
    booking_id: str
    passenger: str
    route: str
    date: date
    price: int = 0  # euros (bookings made before fares existed carry none)


class HotelBooking(_Model):
    booking_id: str
    guest: str
    city: City
    check_in: date
    nights: int


class TicketBooking(_Model):
    booking_id: str
    holder: str
    city: City
    date: date
    count: int


class CarBooking(_Model):
    """What the car-rental service answers (built from its JSON)."""

    booking_id: str
    renter: str
    city: City
    pickup: date
    days: int
    price: int  # euros


class InsuranceBooking(_Model):
    booking_id: str
    holder: str
    premium: int  # euros


class TripBooking(_Model):
    """A bought trip package: the three bookings, travel insurance if the flight was
    expensive, the car if one was asked for, and the confirmed payment."""

    flight: FlightBooking
    hotel: HotelBooking
    tickets: TicketBooking
    insurance: InsuranceBooking | None = None
    car: CarBooking | None = None
    payment: PaymentConfirmation | None = None  # trips bought before payments: none
