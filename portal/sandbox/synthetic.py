"""Deterministic synthetic schools: provider-neutral MIS data from a seed, for sandboxes, tests and the benchmark."""
from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta, timezone
from typing import NamedTuple

__all__ = [
    "AssessmentResult",
    "Deletion",
    "Exclusion",
    "Group",
    "Lesson",
    "Mark",
    "Pupil",
    "Staff",
    "Subject",
    "SyntheticSchool",
    "generate_school",
    "generate_schools",
    "school_days",
    "upn_check_letter",
    "valid_upn",
]

# ---------------------------------------------------------------- UPN check letter (DfE algorithm)

# The 23 letters the DfE uses for check letters and temporary-UPN final characters (no I, O or S).
UPN_LETTERS = "ABCDEFGHJKLMNPQRTUVWXYZ"


def upn_check_letter(rest: str) -> str:
    """Return the check letter for the last 12 characters of a UPN.

    Characters 2..13 are weighted 2..13; the sum modulo 23 indexes UPN_LETTERS. A temporary
    UPN ends in a letter, which counts as its position in UPN_LETTERS.
    """
    if len(rest) != 12 or not rest[:11].isdigit() or not (rest[11].isdigit() or rest[11] in UPN_LETTERS):
        raise ValueError("a UPN's last 12 characters are 11 digits and a digit or check-alphabet letter")
    total = 0
    for weight, char in enumerate(rest, start=2):
        value = int(char) if char.isdigit() else UPN_LETTERS.index(char)
        total += value * weight
    return UPN_LETTERS[total % 23]


def valid_upn(upn: str | None) -> bool:
    """Return True when the UPN has 13 characters and a correct check letter."""
    if not upn or len(upn) != 13:
        return False
    try:
        return upn[0] == upn_check_letter(upn[1:])
    except ValueError:
        return False


def make_upn(la_code: str, establishment_number: str, year_allocated: int, serial: int) -> str:
    """Build a permanent UPN: check letter, LA code, establishment number, 2-digit year, 3-digit serial."""
    rest = f"{la_code}{establishment_number}{year_allocated % 100:02d}{serial % 1000:03d}"
    return upn_check_letter(rest) + rest


# ---------------------------------------------------------------- school calendar

ACADEMIC_YEAR_START = date(2025, 9, 3)
# Holiday weeks (Monday of each week off) for the synthetic academic years; bank holidays come from `holidays`.
_BREAK_WEEKS = {
    date(2025, 10, 27), date(2025, 12, 22), date(2025, 12, 29), date(2026, 2, 16), date(2026, 3, 30),
    date(2026, 4, 6), date(2026, 5, 25), date(2026, 7, 20), date(2026, 7, 27), date(2026, 8, 3),
    date(2026, 8, 10), date(2026, 8, 17), date(2026, 8, 24), date(2026, 8, 31), date(2026, 10, 26),
    date(2026, 12, 21), date(2026, 12, 28),
}


def school_days(count: int, start: date = ACADEMIC_YEAR_START) -> list[date]:
    """Return ``count`` English school days from ``start``: weekdays outside holidays and bank holidays."""
    import holidays

    bank = holidays.country_holidays("GB", subdiv="ENG", years=range(start.year, start.year + 3 + count // 190))
    days: list[date] = []
    day = start
    while len(days) < count:
        monday = day - timedelta(days=day.weekday())
        if day.weekday() < 5 and monday not in _BREAK_WEEKS and day not in bank:
            days.append(day)
        day += timedelta(days=1)
    return days


# ---------------------------------------------------------------- reference data (DfE codes, weighted)

# DfE ethnicity codes with rough England school-population shares.
ETHNICITIES = (
    ("WBRI", 600), ("WOTH", 70), ("WIRI", 3), ("WROM", 5), ("MWBC", 15), ("MWBA", 10), ("MWAS", 15),
    ("MOTH", 20), ("AIND", 35), ("APKN", 45), ("ABAN", 20), ("AOTH", 20), ("BAFR", 40), ("BCRB", 10),
    ("BOTH", 10), ("CHNE", 5), ("OOTH", 20), ("REFU", 20), ("NOBT", 17),
)
# DfE first-language codes other than English (ENG) and "believed to be English" (ENB).
OTHER_LANGUAGES = (
    ("POL", 12), ("URD", 12), ("PNJ", 8), ("BNG", 8), ("GUJ", 5), ("ARA", 8), ("SOM", 5), ("TAM", 3),
    ("POR", 5), ("SPA", 4), ("TUR", 3), ("LIT", 3), ("FRN", 3), ("CHI", 3),
)
SEN_NEEDS = (("SLCN", 25), ("SEMH", 20), ("ASD", 15), ("MLD", 12), ("SPLD", 12), ("PD", 3), ("HI", 2), ("VI", 1), ("OTH", 5), ("NSA", 5))
# Absence codes, authorised then unauthorised, with shares within a day's absence.
ABSENCE_CODES = (("I", 55), ("M", 8), ("C", 5), ("R", 2), ("O", 14), ("G", 8), ("N", 4), ("U", 4))
ATTENDANCE_CODE_MEANINGS = {
    "/": ("Present (AM)", "present"),
    "\\": ("Present (PM)", "present"),
    "L": ("Late (before registers closed)", "present"),
    "B": ("Educated off site", "approved_educational_activity"),
    "P": ("Approved sporting activity", "approved_educational_activity"),
    "V": ("Educational visit or trip", "approved_educational_activity"),
    "I": ("Illness", "authorised_absence"),
    "M": ("Medical or dental appointment", "authorised_absence"),
    "C": ("Authorised leave of absence", "authorised_absence"),
    "R": ("Religious observance", "authorised_absence"),
    "E": ("Suspended or permanently excluded", "authorised_absence"),
    "O": ("Absent in other or unknown circumstances", "unauthorised_absence"),
    "G": ("Holiday not authorised", "unauthorised_absence"),
    "N": ("No reason yet provided", "unauthorised_absence"),
    "U": ("Arrived after registers closed", "unauthorised_absence"),
}
FORENAMES_F = ("Olivia", "Amelia", "Isla", "Ava", "Ivy", "Freya", "Lily", "Florence", "Mia", "Willow", "Rosie", "Sophia",
               "Isabella", "Grace", "Daisy", "Sienna", "Poppy", "Elsie", "Emily", "Ella", "Evelyn", "Phoebe", "Sofia",
               "Aisha", "Fatima", "Maryam", "Zara", "Amira", "Maja", "Zuzanna", "Chloe", "Hannah", "Ruby", "Jessica")
FORENAMES_M = ("Muhammad", "Noah", "Oliver", "George", "Arthur", "Leo", "Harry", "Oscar", "Archie", "Henry", "Theodore",
               "Freddie", "Jack", "Charlie", "Theo", "Alfie", "Jacob", "Thomas", "Finley", "Arlo", "William", "Lucas",
               "Isaac", "Ibrahim", "Yusuf", "Adam", "Omar", "Jakub", "Kacper", "Samuel", "Joshua", "Daniel", "Alexander")
SHORT_NAMES = {"Alexander": "Alex", "Samuel": "Sam", "Theodore": "Teddy", "Jessica": "Jess", "Isabella": "Bella",
               "William": "Will", "Thomas": "Tom", "Daniel": "Dan", "Joshua": "Josh", "Evelyn": "Evie", "Sophia": "Sophie"}
SURNAMES = ("Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Patel", "Robinson", "Wright",
            "Thompson", "Evans", "Walker", "White", "Roberts", "Green", "Hall", "Thomas", "Clarke", "Jackson", "Wood",
            "Harris", "Edwards", "Turner", "Martin", "Cooper", "Hill", "Ward", "Hughes", "Moore", "Clark", "Khan",
            "Ahmed", "Ali", "Hussain", "Begum", "Singh", "Kaur", "Nowak", "Kowalski", "Okafor", "Mensah", "Adeyemi",
            "Campbell", "Murphy", "Kelly", "Chen", "Wang", "Nguyen", "O'Brien", "Baker", "Lewis", "Young", "King")
TITLES = {"F": ("Ms", "Mrs", "Miss", "Dr"), "M": ("Mr", "Mr", "Mr", "Dr")}
SECONDARY_SUBJECTS = (("En", "English"), ("Ma", "Mathematics"), ("Sc", "Science"), ("Hi", "History"),
                      ("Gg", "Geography"), ("Fr", "French"), ("Ar", "Art"), ("Co", "Computing"), ("Pe", "Physical Education"))
PRIMARY_SUBJECTS = (("En", "English"), ("Ma", "Mathematics"), ("Sc", "Science"), ("Pe", "Physical Education"))
PERIODS = (("P1", "08:50", "09:50"), ("P2", "09:50", "10:50"), ("P3", "11:10", "12:10"), ("P4", "13:00", "14:00"),
           ("P5", "14:00", "15:00"))
EXCLUSION_REASONS = ("PP", "VP", "PA", "DB", "DM", "BU", "PD", "OT")


def _weighted(rng: random.Random, table: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([v for v, _ in table], weights=[w for _, w in table])[0]


# ---------------------------------------------------------------- entities (provider-neutral; keys are our own ids)


@dataclass(slots=True)
class Pupil:
    key: str
    mis_id: str
    legal_forename: str
    legal_surname: str
    preferred_forename: str
    preferred_surname: str
    gender: str  # "M" or "F"
    date_of_birth: date
    upn: str
    year_group: str  # "R", "1".."13"
    registration_group: str  # group key
    admission_date: date
    leaving_date: date | None
    fsm: bool
    fsm_ever6: bool
    pupil_premium: bool
    sen_status: str  # DfE SEN provision: N, K, E
    sen_need: str | None  # DfE primary need code, None when N
    first_language: str
    eal: bool
    ethnicity: str
    looked_after: bool
    ever_in_care: bool
    service_child: bool
    created_at: datetime
    updated_at: datetime
    absence_rate: float = 0.05  # drives the synthetic attendance; not MIS data
    slot: int = 0  # position in the attendance ordering
    restored_at: datetime | None = None  # when a deleted pupil came back with the same MIS id

    @property
    def on_roll(self) -> bool:
        return self.leaving_date is None


@dataclass(slots=True)
class Staff:
    key: str
    mis_id: str
    title: str
    forename: str
    surname: str
    gender: str
    date_of_birth: date
    email: str
    roles: tuple[str, ...]
    teaching: bool
    currently_employed: bool
    employment_start: date
    # Special-category data an MIS holds about staff; connectors must drop it (R76).
    ethnicity: str
    religion: str
    created_at: datetime
    updated_at: datetime


@dataclass(slots=True)
class Subject:
    key: str
    code: str
    name: str
    created_at: datetime
    updated_at: datetime


@dataclass(slots=True)
class Group:
    key: str
    name: str
    group_type: str  # "class", "registration", "year"
    year_group: str | None
    subject_key: str | None
    staff_key: str | None
    members: list[str]  # pupil keys
    created_at: datetime
    updated_at: datetime
    restored_at: datetime | None = None  # Wonde fills it when the group comes back with the same MIS id


@dataclass(slots=True)
class Lesson:
    key: str
    group_key: str
    staff_key: str | None
    period_name: str
    day_of_week: int  # 1 = Monday
    starts_at: str  # "09:00", local time
    ends_at: str
    lesson_date: date
    room: str
    created_at: datetime
    updated_at: datetime


@dataclass(slots=True)
class AssessmentResult:
    key: str
    pupil_key: str
    stage: str  # KS1, KS2, KS4 or a current stage such as "KS3", "GCSE"
    statutory: bool
    aspect: str
    template: str
    result: str
    result_date: date
    created_at: datetime
    updated_at: datetime


@dataclass(slots=True)
class Exclusion:
    key: str
    pupil_key: str
    exclusion_type: str  # "fixed" or "permanent"
    start_date: date
    end_date: date
    sessions: int
    reason: str  # DfE reason code; connectors must not pass it on as free text (R77)
    comment: str  # free text an MIS may hold; never extracted
    created_at: datetime
    updated_at: datetime


class Mark(NamedTuple):
    pupil_key: str
    session_date: date
    session: str  # "AM" or "PM"
    code: str
    updated_at: datetime
    position: int


@dataclass(frozen=True, slots=True)
class Deletion:
    kind: str  # "pupil", "staff", "group", "subject"
    key: str
    mis_id: str | None
    deleted_at: datetime
    restored_at: datetime | None = None  # Wonde fills it when the record comes back with the same MIS id
    group_type: str | None = None  # a group's: "class" is its own deletion type at Wonde


# ---------------------------------------------------------------- the school


@dataclass
class SyntheticSchool:
    """One synthetic school. Attendance is computed on demand; everything else is held (small)."""

    seed: int
    name: str
    urn: str
    la_code: str
    establishment_number: str
    phase: str  # "primary" or "secondary"
    mis: str
    days: list[date]
    pupils: dict[str, Pupil] = field(default_factory=dict)
    staff: dict[str, Staff] = field(default_factory=dict)
    subjects: dict[str, Subject] = field(default_factory=dict)
    groups: dict[str, Group] = field(default_factory=dict)
    lessons: dict[str, Lesson] = field(default_factory=dict)
    results: dict[str, AssessmentResult] = field(default_factory=dict)
    exclusions: dict[str, Exclusion] = field(default_factory=dict)
    deletions: list[Deletion] = field(default_factory=list)
    # Attendance: one slot per pupil ever created; the codes are generated per pupil on first use.
    slots: list[str] = field(default_factory=list)
    _codes: dict[str, str] = field(default_factory=dict, repr=False)
    _mark_changes: dict[tuple[int, int, int], tuple[str, datetime]] = field(default_factory=dict, repr=False)
    _deleted_pupils: dict[str, Pupil] = field(default_factory=dict, repr=False)
    _deleted_groups: dict[str, tuple[Group, dict[str, Lesson]]] = field(default_factory=dict, repr=False)
    _stamps: list[datetime] = field(default_factory=list, repr=False)
    _counter: int = 0

    @property
    def dfe_number(self) -> str:
        return f"{self.la_code}{self.establishment_number}"

    def on_roll(self) -> list[Pupil]:
        """Return the pupils currently on roll, in creation order."""
        return [p for p in self.pupils.values() if p.on_roll]

    def leavers(self) -> list[Pupil]:
        """Return the pupils who have left (still held by the MIS), in creation order."""
        return [p for p in self.pupils.values() if not p.on_roll]

    def groups_of(self, pupil_key: str) -> list[Group]:
        """Return the groups the pupil belongs to."""
        return [g for g in self.groups.values() if pupil_key in g.members]

    def attendance_codes(self) -> dict[str, tuple[str, str]]:
        """Return the DfE attendance codes in use: code -> (description, meaning)."""
        return dict(ATTENDANCE_CODE_MEANINGS)

    # -- attendance: positions run day by day, AM then PM, pupil slot by slot

    @property
    def mark_positions(self) -> int:
        """Return the size of the mark position space (marks may be absent at some positions)."""
        return len(self.days) * 2 * len(self.slots)

    def mark_at(self, position: int) -> Mark | None:
        """Return the mark at a position, or None when that pupil has no mark that session."""
        n = len(self.slots)
        day_index, rest = divmod(position, 2 * n)
        session, slot = divmod(rest, n)
        pupil = self.pupils.get(self.slots[slot])
        if pupil is None:
            return None
        day = self.days[day_index]
        if day < pupil.admission_date or (pupil.leaving_date is not None and day > pupil.leaving_date):
            return None
        changed = self._mark_changes.get((slot, day_index, session))
        if changed:
            code, updated = changed
        else:
            code = self._pupil_codes(pupil)[2 * day_index + session]
            updated = self.mark_default_updated_at(day_index)
        return Mark(pupil.key, day, "PM" if session else "AM", code, updated, position)

    def marks(self, start: int = 0) -> Iterator[Mark]:
        """Yield every mark from a position on, lazily."""
        for position in range(start, self.mark_positions):
            mark = self.mark_at(position)
            if mark is not None:
                yield mark

    def mark_default_updated_at(self, day_index: int) -> datetime:
        """Return when a register's marks were last changed unless edited later: that day at 16:00 UTC."""
        return self._day_stamps()[day_index]

    def first_position_updated_after(self, since: datetime) -> int:
        """Return the first position whose unedited marks were updated after ``since``."""
        return bisect_right(self._day_stamps(), since) * 2 * len(self.slots)

    def _day_stamps(self) -> list[datetime]:
        if len(self._stamps) != len(self.days):
            self._stamps = [datetime.combine(day, time(16, 0), tzinfo=timezone.utc) for day in self.days]
        return self._stamps

    def edited_marks(self) -> list[Mark]:
        """Return the marks edited after their register day, in position order."""
        out = []
        for slot, day_index, session in sorted(self._mark_changes):
            mark = self.mark_at(day_index * 2 * len(self.slots) + session * len(self.slots) + slot)
            if mark is not None:
                out.append(mark)
        return out

    def _pupil_codes(self, pupil: Pupil) -> str:
        codes = self._codes.get(pupil.key)
        if codes is None:
            codes = self._codes[pupil.key] = _attendance_codes(self, pupil)
        return codes

    # -- mutations between runs, each stamped with the provider's updated time

    def _next_key(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}{self._counter:06d}"

    def update_pupil(self, key: str, at: datetime, **changes) -> Pupil:
        """Change a pupil's fields (basic or census) and stamp the pupil as updated at ``at``."""
        pupil = self.pupils[key]
        for name, value in changes.items():
            setattr(pupil, name, value)
        pupil.updated_at = at
        return pupil

    def delete_pupil(self, key: str, at: datetime) -> None:
        """Remove a pupil from the MIS: their memberships, results and exclusions go too (no deletion rows for those)."""
        pupil = self.pupils.pop(key)
        self._deleted_pupils[key] = pupil
        self.deletions.append(Deletion("pupil", key, pupil.mis_id, at))
        self._drop_pupil_children(key, at)

    def restore_pupil(self, key: str, at: datetime) -> Pupil:
        """Bring a deleted pupil back with the same MIS id: their record, stamped ``at``, and their
        registers as they were (stamped with their own days, not ``at``); their groups, results and
        exclusions do not come back."""
        pupil = self._deleted_pupils.pop(key)
        pupil.updated_at = pupil.restored_at = at
        self.pupils[key] = pupil
        self._deletion_restored("pupil", key, at)
        return pupil

    def delete_group(self, key: str, at: datetime) -> None:
        """Remove a group (a class) from the MIS: its lessons and memberships go with it, without deletion rows."""
        group = self.groups.pop(key)
        lessons = {k: lesson for k, lesson in self.lessons.items() if lesson.group_key == key}
        for k in lessons:
            del self.lessons[k]
        self._deleted_groups[key] = (group, lessons)
        self.deletions.append(Deletion("group", key, group.key, at, group_type=group.group_type))

    def restore_group(self, key: str, at: datetime) -> Group:
        """Bring a deleted group back with the same MIS id: the group and its members, stamped ``at``,
        and its lessons as they were (stamped with their own times, not ``at``)."""
        group, lessons = self._deleted_groups.pop(key)
        group.updated_at = group.restored_at = at
        self.groups[key] = group
        self.lessons.update(lessons)
        self._deletion_restored("group", key, at)
        return group

    def _deletion_restored(self, kind: str, key: str, at: datetime) -> None:
        """Fill ``restored_at`` on the record's open deletion entry (Wonde's feed lists it as updated then)."""
        self.deletions = [replace(d, restored_at=at) if d.kind == kind and d.key == key and d.restored_at is None else d
                          for d in self.deletions]

    def make_leaver(self, key: str, at: datetime, leaving_date: date | None = None) -> Pupil:
        """Record that a pupil left: they leave their groups and move to the leavers list."""
        pupil = self.pupils[key]
        pupil.leaving_date = leaving_date or self.days[-1]
        pupil.updated_at = at
        for group in self.groups_of(key):
            group.members.remove(key)
            group.updated_at = at
        return pupil

    def update_staff(self, key: str, at: datetime, **changes) -> Staff:
        """Change a member of staff's fields and stamp them as updated at ``at``."""
        member = self.staff[key]
        for name, value in changes.items():
            setattr(member, name, value)
        member.updated_at = at
        return member

    def delete_staff(self, key: str, at: datetime) -> None:
        """Remove a member of staff from the MIS."""
        member = self.staff.pop(key)
        self.deletions.append(Deletion("staff", key, member.mis_id, at))
        for group in self.groups.values():
            if group.staff_key == key:
                group.staff_key = None
                group.updated_at = at

    def set_mark(self, pupil_key: str, day: date, session: str, code: str, at: datetime) -> None:
        """Edit one attendance mark after its register day (e.g. a late-notified illness)."""
        slot = self.pupils[pupil_key].slot
        self._mark_changes[(slot, self.days.index(day), 1 if session == "PM" else 0)] = (code, at)

    def add_pupil(self, at: datetime, rng: random.Random | None = None) -> Pupil:
        """Admit a new pupil on the last school day, in the largest registration group."""
        rng = rng or random.Random(f"{self.seed}:add:{self._counter}")
        reg = max((g for g in self.groups.values() if g.group_type == "registration"), key=lambda g: len(g.members))
        pupil = _make_pupil(self, rng, self._next_key("P"), reg.year_group or "7", reg.key, self.days[-1], at, len(self.slots))
        pupil.created_at = at
        self.pupils[pupil.key] = pupil
        self.slots.append(pupil.key)
        reg.members.append(pupil.key)
        reg.updated_at = at
        # The new pupil's registers are recorded when they are admitted, not on the day they stand for.
        for day_index, day in enumerate(self.days):
            if day >= pupil.admission_date:
                for session in (0, 1):
                    code = self._pupil_codes(pupil)[2 * day_index + session]
                    self._mark_changes[(pupil.slot, day_index, session)] = (code, at)
        return pupil

    def mutate(
        self,
        at: datetime,
        *,
        seed: int = 0,
        updated: int = 0,
        deleted: int = 0,
        leavers: int = 0,
        added: int = 0,
        marks: int = 0,
        staff_updated: int = 0,
        staff_deleted: int = 0,
    ) -> dict[str, list[str]]:
        """Apply a batch of changes as an MIS would between two extract runs; return the keys touched per change."""
        rng = random.Random(f"{self.seed}:mutate:{seed}")
        done: dict[str, list[str]] = {k: [] for k in ("updated", "deleted", "leavers", "added", "marks", "staff_updated", "staff_deleted")}
        pool = [p.key for p in self.on_roll()]
        rng.shuffle(pool)
        for key in pool[:updated]:
            pupil = self.pupils[key]
            self.update_pupil(key, at, preferred_surname=pupil.preferred_surname + "-" + rng.choice(SURNAMES), fsm=not pupil.fsm)
            done["updated"].append(key)
        for key in pool[updated : updated + deleted]:
            self.delete_pupil(key, at)
            done["deleted"].append(key)
        for key in pool[updated + deleted : updated + deleted + leavers]:
            self.make_leaver(key, at)
            done["leavers"].append(key)
        for _ in range(added):
            done["added"].append(self.add_pupil(at, rng).key)
        remaining = [p for p in self.on_roll() if p.admission_date <= self.days[0]]
        for pupil in rng.sample(remaining, min(marks, len(remaining))):
            day = rng.choice(self.days)
            session = rng.choice(("AM", "PM"))
            self.set_mark(pupil.key, day, session, "M" if rng.random() < 0.5 else "I", at)
            done["marks"].append(f"{pupil.key}:{day.isoformat()}:{session}")
        staff_pool = list(self.staff)
        rng.shuffle(staff_pool)
        for key in staff_pool[:staff_updated]:
            self.update_staff(key, at, roles=(*self.staff[key].roles, "Form Tutor"))
            done["staff_updated"].append(key)
        for key in staff_pool[staff_updated : staff_updated + staff_deleted]:
            self.delete_staff(key, at)
            done["staff_deleted"].append(key)
        return done

    def _drop_pupil_children(self, key: str, at: datetime) -> None:
        for group in self.groups_of(key):
            group.members.remove(key)
            group.updated_at = at
        for rkey in [k for k, r in self.results.items() if r.pupil_key == key]:
            del self.results[rkey]
        for ekey in [k for k, e in self.exclusions.items() if e.pupil_key == key]:
            del self.exclusions[ekey]


# ---------------------------------------------------------------- generation


def _stamp(rng: random.Random, start: datetime, end: datetime) -> datetime:
    seconds = int((end - start).total_seconds())
    return (start + timedelta(seconds=rng.randrange(max(seconds, 1)))).replace(microsecond=0)


def _year_groups(phase: str, sixth_form: bool) -> list[str]:
    if phase == "primary":
        return ["R", "1", "2", "3", "4", "5", "6"]
    return ["7", "8", "9", "10", "11"] + (["12", "13"] if sixth_form else [])


def _year_number(year_group: str) -> int:
    return 0 if year_group == "R" else int(year_group)


def _make_pupil(school: SyntheticSchool, rng: random.Random, key: str, year_group: str, reg_key: str,
                admitted: date, stamp: datetime, slot: int) -> Pupil:
    gender = rng.choice("MF")
    forename = rng.choice(FORENAMES_F if gender == "F" else FORENAMES_M)
    surname = rng.choice(SURNAMES)
    n = _year_number(year_group)
    # Year N in 2025/26 was born between 1 September (2020 - N) and 31 August (2021 - N).
    born_from = date(2020 - n, 9, 1)
    dob = born_from + timedelta(days=rng.randrange(365))
    ethnicity = _weighted(rng, ETHNICITIES)
    other_language = rng.random() < (0.12 if ethnicity in ("WBRI", "WIRI", "MWBC") else 0.55)
    language = _weighted(rng, OTHER_LANGUAGES) if other_language else rng.choice(("ENG", "ENG", "ENG", "ENB"))
    fsm = rng.random() < 0.24
    fsm6 = fsm or rng.random() < 0.09
    in_care = rng.random() < 0.007
    ever_care = in_care or rng.random() < 0.01
    sen_roll = rng.random()
    sen = "E" if sen_roll < 0.05 else "K" if sen_roll < 0.18 else "N"
    # About one pupil in eight is persistently absent (10 % of sessions or more).
    absence = rng.uniform(0.09, 0.25) if rng.random() < 0.13 else rng.uniform(0.0, 0.07)
    entry_year = ACADEMIC_YEAR_START.year - n
    return Pupil(
        key=key,
        mis_id=str(10000 + slot),
        legal_forename=forename,
        legal_surname=surname,
        preferred_forename=SHORT_NAMES.get(forename, forename) if rng.random() < 0.3 else forename,
        preferred_surname=surname,
        gender=gender,
        date_of_birth=dob,
        upn=make_upn(school.la_code, school.establishment_number, entry_year, slot),
        year_group=year_group,
        registration_group=reg_key,
        admission_date=admitted,
        leaving_date=None,
        fsm=fsm,
        fsm_ever6=fsm6,
        pupil_premium=fsm6 or ever_care,
        sen_status=sen,
        sen_need=None if sen == "N" else _weighted(rng, SEN_NEEDS),
        first_language=language,
        eal=language not in ("ENG", "ENB"),
        ethnicity=ethnicity,
        looked_after=in_care,
        ever_in_care=ever_care,
        service_child=rng.random() < 0.01,
        created_at=stamp,
        updated_at=stamp,
        absence_rate=absence,
        slot=slot,
    )


def _attendance_codes(school: SyntheticSchool, pupil: Pupil) -> str:
    """Return a pupil's codes for every session (AM, PM per day) as one string, deterministic per pupil."""
    rng = random.Random(f"{school.seed}:attendance:{pupil.key}")
    excluded: set[date] = set()
    for exclusion in school.exclusions.values():
        if exclusion.pupil_key == pupil.key:
            day = exclusion.start_date
            while day <= exclusion.end_date:
                excluded.add(day)
                day += timedelta(days=1)
    out = []
    rate = pupil.absence_rate
    illness_left = 0
    for day in school.days:
        if day in excluded:
            out.append("EE")
            continue
        if illness_left:
            illness_left -= 1
            out.append("II")
            continue
        roll = rng.random()
        if roll < rate:
            code = _weighted(rng, ABSENCE_CODES)
            if code == "I" and rng.random() < 0.3:
                illness_left = rng.randint(1, 3)  # illness often runs over several days
            if code == "M" or code == "U":
                out.append(code + "\\")  # appointment or late arrival in the morning, in for the afternoon
            else:
                out.append(code + code)
            continue
        am = "L" if rng.random() < 0.02 else "/"
        pm = "\\"
        if rng.random() < 0.01:
            pm = rng.choice("BPV")
        out.append(am + pm)
    return "".join(out)


def generate_school(
    seed: int,
    *,
    pupils: int = 250,
    days: int = 190,
    phase: str | None = None,
    sixth_form: bool = True,
    name: str | None = None,
    urn: str | None = None,
    la_code: str | None = None,
    establishment_number: str | None = None,
) -> SyntheticSchool:
    """Generate a school deterministically from ``seed`` with about ``pupils`` pupils and ``days`` school days."""
    rng = random.Random(seed)
    phase = phase or ("primary" if pupils <= 450 and rng.random() < 0.6 else "secondary")
    la = la_code or str(rng.choice((201, 202, 203, 204, 205, 206, 207, 208, 209, 210, 211, 212, 213, 330, 371, 856, 926)))
    estab = establishment_number or f"{(2000 if phase == 'primary' else 4000) + rng.randrange(1000):04d}"
    school = SyntheticSchool(
        seed=seed,
        name=name or f"{rng.choice(('Oakfield', 'Riverside', 'St Anne', 'Hillcrest', 'Meadow', 'Kingsway'))} "
        f"{'Primary School' if phase == 'primary' else 'Academy'}",
        urn=urn or str(100000 + rng.randrange(50000)),
        la_code=la,
        establishment_number=estab,
        phase=phase,
        mis=rng.choice(("SIMS", "Arbor", "Bromcom", "ScholarPack")),
        days=school_days(days),
    )
    created = datetime(2025, 7, 1, tzinfo=timezone.utc)
    before_term = datetime.combine(school.days[0], time(7, 0), tzinfo=timezone.utc)
    years = _year_groups(phase, sixth_form)
    weights = [1.0] * len(years)
    if phase == "secondary" and sixth_form:
        weights[-2:] = [0.45, 0.4]  # smaller sixth form
    per_weight = pupils / sum(weights)
    form_size = 30 if phase == "primary" else 28

    # Subjects
    for code, sname in PRIMARY_SUBJECTS if phase == "primary" else SECONDARY_SUBJECTS:
        key = f"SUB-{code}"
        school.subjects[key] = Subject(key, code, sname, created, _stamp(rng, created, before_term))

    # Staff: about one teacher per 18 pupils, plus support staff
    teachers = max(4, round(pupils / 18))
    support = max(2, round(pupils / 45))
    role_plan = ["Headteacher", "Deputy Headteacher"] + ["Teacher"] * (teachers - 2) + ["Teaching Assistant"] * support + [
        "Administrator", "Business Manager"]
    for i, role in enumerate(role_plan):
        gender = rng.choice("MF")
        forename = rng.choice(FORENAMES_F if gender == "F" else FORENAMES_M)
        surname = rng.choice(SURNAMES)
        key = f"S{i + 1:05d}"
        roles = (role,)
        if role == "Teacher" and rng.random() < 0.15:
            roles = ("Teacher", "Head of Department")
        school.staff[key] = Staff(
            key=key,
            mis_id=str(5000 + i),
            title=rng.choice(TITLES[gender]),
            forename=forename,
            surname=surname,
            gender=gender,
            date_of_birth=date(1965, 1, 1) + timedelta(days=rng.randrange(365 * 35)),
            email=f"{forename[0].lower()}.{surname.lower().replace(chr(39), '')}{i}@school{seed}.example",
            roles=roles,
            teaching="Teacher" in roles or role.endswith("Headteacher"),
            currently_employed=rng.random() > 0.03,
            employment_start=date(2000, 9, 1) + timedelta(days=rng.randrange(365 * 25)),
            ethnicity=_weighted(rng, ETHNICITIES),
            religion=rng.choice(("Christian", "Muslim", "No religion", "Hindu", "Sikh", "Jewish", "Refused")),
            created_at=created,
            updated_at=_stamp(rng, created, before_term),
        )
    teacher_keys = [k for k, s in school.staff.items() if s.teaching]

    # Pupils by year group and registration group
    slot = 0
    for year, weight in zip(years, weights):
        count = max(1, round(per_weight * weight * rng.uniform(0.93, 1.07)))
        forms = max(1, -(-count // form_size))
        year_key = f"G-Y{year}"
        school.groups[year_key] = Group(year_key, f"Year {year}", "year", year, None, rng.choice(teacher_keys), [],
                                        created, _stamp(rng, created, before_term))
        form_keys = []
        for f in range(forms):
            reg_key = f"G-R{year}-{f}"
            form_keys.append(reg_key)
            school.groups[reg_key] = Group(reg_key, f"{year}{'ABCDEFGHJKLMNPQRSTUVWXYZ'[f % 24]}", "registration", year,
                                           None, rng.choice(teacher_keys), [], created, _stamp(rng, created, before_term))
        for i in range(count):
            reg_key = form_keys[i % forms]
            admitted = ACADEMIC_YEAR_START - timedelta(days=365 * (_year_number(year) - (12 if _year_number(year) >= 12 else 7 if phase == "secondary" else 0)))
            if rng.random() < 0.04:
                admitted = school.days[min(len(school.days) - 1, rng.randrange(max(1, len(school.days) // 2)))]
            key = f"P{slot + 1:06d}"
            pupil = _make_pupil(school, rng, key, year, reg_key, admitted, created, slot)
            pupil.updated_at = _stamp(rng, created, before_term)
            school.pupils[key] = pupil
            school.slots.append(key)
            school.groups[reg_key].members.append(key)
            school.groups[year_key].members.append(key)
            slot += 1
        # Teaching classes: one per form per subject (primary: the form is taught as a class per subject)
        for sub_key, subject in school.subjects.items():
            for f, reg_key in enumerate(form_keys):
                class_key = f"G-C{year}-{subject.code}-{f}"
                members = list(school.groups[reg_key].members)
                school.groups[class_key] = Group(
                    class_key, f"{year}{'ABCDEFGHJKLMNPQRSTUVWXYZ'[f % 24]}/{subject.code}{f + 1}", "class", year,
                    sub_key, rng.choice(teacher_keys), members, created, _stamp(rng, created, before_term))
    school._counter = slot

    # Timetable: one week of dated lessons (the last full week in range), each class 1-4 lessons.
    week_start = school.days[-1] - timedelta(days=school.days[-1].weekday())
    week_days = [week_start + timedelta(days=d) for d in range(5)]
    lesson_no = 0
    for group in school.groups.values():
        if group.group_type != "class":
            continue
        per_week = 4 if school.subjects[group.subject_key].code in ("En", "Ma") else 2
        for slot_index in rng.sample(range(25), per_week):
            day_index, period_index = divmod(slot_index, 5)
            period, start, end = PERIODS[period_index]
            lesson_no += 1
            key = f"L{lesson_no:06d}"
            school.lessons[key] = Lesson(key, group.key, group.staff_key, period, day_index + 1, start, end,
                                         week_days[day_index], f"R{rng.randrange(1, 40):02d}", created,
                                         _stamp(rng, created, before_term))

    # Assessment: statutory prior attainment and current teacher assessment.
    result_no = 0

    def add_result(pupil: Pupil, stage: str, statutory: bool, aspect: str, template: str, value: str, on: date) -> None:
        nonlocal result_no
        result_no += 1
        key = f"AR{result_no:07d}"
        stamp = datetime.combine(on, time(17, 0), tzinfo=timezone.utc)
        school.results[key] = AssessmentResult(key, pupil.key, stage, statutory, aspect, template, value, on, stamp, stamp)

    mid_year = school.days[len(school.days) // 2]
    for pupil in school.pupils.values():
        n = _year_number(pupil.year_group)
        if phase == "primary" and n >= 3:
            ks1 = date(ACADEMIC_YEAR_START.year - (n - 2), 6, 20)
            for aspect in ("KS1 Reading TA", "KS1 Writing TA", "KS1 Mathematics TA"):
                add_result(pupil, "KS1", True, aspect, "KS1 Statutory Assessment",
                           rng.choices(("PKF", "WTS", "EXS", "GDS"), weights=(5, 20, 55, 20))[0], ks1)
        if n >= 7:
            ks2 = date(ACADEMIC_YEAR_START.year - (n - 6), 7, 8)
            for aspect in ("KS2 Reading scaled score", "KS2 Mathematics scaled score"):
                add_result(pupil, "KS2", True, aspect, "KS2 Statutory Assessment",
                           str(max(80, min(120, round(rng.gauss(105, 7))))), ks2)
        if n >= 12:
            ks4 = date(ACADEMIC_YEAR_START.year - (n - 11), 8, 21)
            for aspect in ("GCSE English Language grade", "GCSE Mathematics grade"):
                add_result(pupil, "KS4", True, aspect, "KS4 Statutory Results", str(rng.randint(4, 9)), ks4)
        if phase == "primary":
            stage = "EYFS" if n == 0 else "KS1" if n <= 2 else "KS2"
            for subject in ("Reading", "Mathematics"):
                add_result(pupil, stage, False, f"{subject} teacher assessment", f"Year {pupil.year_group} Spring Assessment",
                           rng.choices(("WTS", "EXS", "GDS"), weights=(25, 55, 20))[0], mid_year)
        else:
            stage = "KS3" if n <= 9 else "GCSE" if n <= 11 else "A-level"
            for subject in ("English", "Mathematics", "Science"):
                value = str(rng.randint(1, 9)) if stage != "A-level" else rng.choice("ABCDE")
                add_result(pupil, stage, False, f"{subject} working-at grade", f"Year {pupil.year_group} Spring Assessment",
                           value, mid_year)

    # Exclusions: suspensions for a few pupils, the odd permanent exclusion in secondary schools.
    exclusion_no = 0
    rate = 0.006 if phase == "primary" else 0.035
    for pupil in school.pupils.values():
        if rng.random() >= rate:
            continue
        exclusion_no += 1
        permanent = phase == "secondary" and rng.random() < 0.04
        start_index = rng.randrange(len(school.days))
        length = len(school.days) - start_index if permanent else min(rng.randint(1, 3), len(school.days) - start_index)
        start, end = school.days[start_index], school.days[start_index + length - 1]
        key = f"EX{exclusion_no:05d}"
        stamp = datetime.combine(start, time(12, 0), tzinfo=timezone.utc)
        school.exclusions[key] = Exclusion(key, pupil.key, "permanent" if permanent else "fixed", start, end, 2 * length,
                                           rng.choice(EXCLUSION_REASONS), "Free-text note held in the MIS", stamp, stamp)
    return school


def generate_schools(count: int, seed: int = 1, **kwargs) -> list[SyntheticSchool]:
    """Generate ``count`` schools with distinct URNs and DfE numbers from one seed."""
    return [
        generate_school(
            seed * 1000 + i,
            urn=str(100000 + (seed * 1000) % 50000 + i),
            establishment_number=f"{2000 + (seed * 7 + i) % 1000:04d}",
            **kwargs,
        )
        for i in range(count)
    ]
