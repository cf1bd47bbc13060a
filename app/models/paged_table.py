"""A table model fed page by page from a list endpoint of the admin API.

Thin adapter: rows are the records already fetched; ``data()`` formats them and never does
I/O. Pages come through an injected async ``fetch(params) -> Page`` (the facade's
``list_page``); searching, filtering and sorting are done by the server. Every change of
the query starts a new generation: a page that arrives for an older generation is
dropped, and the older request is cancelled ("latest wins").
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from pydantic import BaseModel
from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt, Signal

from app.models.entities import Column, display

Fetch = Callable[[dict[str, Any]], Awaitable[Any]]
AnyIndex = QModelIndex | QPersistentModelIndex
RECORD_ROLE = Qt.ItemDataRole.UserRole + 1
PAGE_SIZE = 200


class PagedTableModel(QAbstractTableModel):
    loading_changed = Signal(bool)
    load_failed = Signal(object)  # the exception
    total_changed = Signal(int)
    reset_done = Signal()  # the first page of a new query is in

    def __init__(self, columns: Sequence[Column], fetch: Fetch, *, page_size: int = PAGE_SIZE, parent: Any = None) -> None:
        super().__init__(parent)
        self.columns = tuple(columns)
        self._fetch = fetch
        self.page_size = page_size
        self.rows: list[BaseModel] = []
        self.total = 0
        self.search = ""
        self.filters: dict[str, Any] = {}
        self.sort_key: str | None = None
        self.labels: dict[str, dict[int, str]] = {}  # reference column -> id -> label
        self._generation = 0
        self._task: asyncio.Task[None] | None = None
        self._more: asyncio.Task[None] | None = None
        self.loading = False

    # ------------------------------------------------------------ query

    def params(self, offset: int = 0) -> dict[str, Any]:
        params: dict[str, Any] = {key: value for key, value in self.filters.items() if value is not None and value != ""}
        if self.search:
            params["q"] = self.search
        if self.sort_key:
            params["sort"] = self.sort_key
        params["offset"] = offset
        params["limit"] = self.page_size
        return params

    def set_search(self, text: str) -> asyncio.Task[None]:
        self.search = text.strip()
        return self.reload()

    def set_filter(self, name: str, value: Any) -> asyncio.Task[None]:
        if value is None or value == "":
            self.filters.pop(name, None)
        else:
            self.filters[name] = value
        return self.reload()

    def set_sort(self, key: str | None) -> asyncio.Task[None]:
        self.sort_key = key
        return self.reload()

    def reload(self) -> asyncio.Task[None]:
        """Start over with the current query; whatever was in flight is cancelled."""
        self._generation += 1
        for task in (self._task, self._more):
            if task is not None and not task.done():
                task.cancel()
        self._more = None
        self._set_loading(True)  # at once: a caller may look before the task has started
        self._task = asyncio.ensure_future(self._load(self._generation, 0))
        return self._task

    def cancel(self) -> None:
        """Before the model goes away: nothing in flight may touch it afterwards."""
        self._generation += 1
        for task in (self._task, self._more):
            if task is not None and not task.done():
                task.cancel()
        self._task = self._more = None

    async def _load(self, generation: int, offset: int) -> None:
        try:
            page = await self._fetch(self.params(offset))
        except asyncio.CancelledError:
            raise
        except Exception as error:  # shown by the panel next to the table
            if generation == self._generation:
                self._set_loading(False)
                self.load_failed.emit(error)
            return
        if generation != self._generation:
            return  # an answer to a question nobody asks any more
        if offset == 0:
            self.beginResetModel()
            self.rows = list(page.items)
            self.total = page.total
            self.endResetModel()
            self.total_changed.emit(self.total)
            self._set_loading(False)
            self.reset_done.emit()
        else:
            items = list(page.items)
            self.total = page.total
            if items:
                first = len(self.rows)
                self.beginInsertRows(QModelIndex(), first, first + len(items) - 1)
                self.rows.extend(items)
                self.endInsertRows()
            self._set_loading(False)

    def _set_loading(self, loading: bool) -> None:
        if loading != self.loading:
            self.loading = loading
            self.loading_changed.emit(loading)

    # ------------------------------------------------------------ incremental fetching

    def canFetchMore(self, parent: AnyIndex = QModelIndex()) -> bool:  # noqa: B008 (Qt's signature)
        return not parent.isValid() and len(self.rows) < self.total and not self.loading

    def fetchMore(self, parent: AnyIndex = QModelIndex()) -> None:  # noqa: B008
        if not self.canFetchMore(parent):
            return
        self._set_loading(True)
        self._more = asyncio.ensure_future(self._load(self._generation, len(self.rows)))

    async def fetch_all_loaded(self) -> None:
        """Wait for what is in flight (tests, exports)."""
        for task in (self._task, self._more):
            if task is not None and not task.done():
                await asyncio.gather(task, return_exceptions=True)

    # ------------------------------------------------------------ Qt's table interface

    def rowCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.columns)

    def data(self, index: AnyIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or index.row() >= len(self.rows):
            return None
        record = self.rows[index.row()]
        if role == RECORD_ROLE:
            return record
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole):
            column = self.columns[index.column()]
            value = getattr(record, column.field, None)
            if column.reference is not None and isinstance(value, int):
                return self.labels.get(column.reference, {}).get(value, f"#{value}")
            return display(value)
        return None

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole and 0 <= section < len(self.columns):
            return self.columns[section].title
        return None

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        """Header clicks: the server sorts (only columns it can sort by)."""
        if not 0 <= column < len(self.columns):
            return
        key = self.columns[column].sort
        if key is None:
            return
        self.set_sort(key if order == Qt.SortOrder.AscendingOrder else f"-{key}")

    # ------------------------------------------------------------ records

    def record(self, row: int) -> BaseModel | None:
        return self.rows[row] if 0 <= row < len(self.rows) else None

    def row_of(self, record_id: Any) -> int:
        for row, record in enumerate(self.rows):
            if getattr(record, "id", None) == record_id:
                return row
        return -1

    def replace_record(self, record: BaseModel) -> int:
        """After a save: the row shows the record as the server returned it."""
        row = self.row_of(getattr(record, "id", None))
        if row >= 0:
            self.rows[row] = record
            self.dataChanged.emit(self.index(row, 0), self.index(row, len(self.columns) - 1))
        return row

    def insert_record(self, record: BaseModel) -> int:
        self.beginInsertRows(QModelIndex(), 0, 0)
        self.rows.insert(0, record)
        self.total += 1
        self.endInsertRows()
        self.total_changed.emit(self.total)
        return 0

    def remove_record(self, record_id: Any) -> None:
        row = self.row_of(record_id)
        if row >= 0:
            self.beginRemoveRows(QModelIndex(), row, row)
            del self.rows[row]
            self.total = max(0, self.total - 1)
            self.endRemoveRows()
            self.total_changed.emit(self.total)

    def set_labels(self, labels: dict[str, dict[int, str]]) -> None:
        self.labels = labels
        if self.rows:
            self.dataChanged.emit(self.index(0, 0), self.index(len(self.rows) - 1, len(self.columns) - 1))
