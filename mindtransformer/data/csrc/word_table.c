/* WordTable: the chunk tokenizer's word cache (see module.c). */

#include "records.h"

/* ---- the word cache ------------------------------------------------------------------------ */

typedef struct {
    uint64_t hash;
    int64_t start;  /* the word's bytes in the arena */
    int64_t row;    /* -1: empty slot */
    int32_t length;
} Slot;

typedef struct {
    PyObject_HEAD
    Slot *slots;
    int64_t capacity;  /* a power of 2 */
    int64_t count;     /* words held = the next row */
    char *arena;
    int64_t arena_used, arena_size;
    PyObject *vocab;     /* token -> id: an unseen word that is a vocab entry is its own one piece */
    Py_ssize_t max_chars;  /* WordPiece's max_input_chars_per_word: a longer word is not looked up */
} WordTable;

static uint64_t hash_bytes(const uint8_t *p, Py_ssize_t n) {  /* FNV-1a */
    uint64_t h = 0xcbf29ce484222325ull;
    for (Py_ssize_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static int table_grow(WordTable *table) {
    int64_t capacity = table->capacity ? table->capacity * 2 : 1 << 16;
    Slot *slots = PyMem_Malloc(capacity * sizeof(Slot));
    if (!slots) { PyErr_NoMemory(); return -1; }
    for (int64_t i = 0; i < capacity; i++) slots[i].row = -1;
    for (int64_t i = 0; i < table->capacity; i++) {
        Slot *old = &table->slots[i];
        if (old->row < 0) continue;
        int64_t j = old->hash & (capacity - 1);
        while (slots[j].row >= 0) j = (j + 1) & (capacity - 1);
        slots[j] = *old;
    }
    PyMem_Free(table->slots);
    table->slots = slots;
    table->capacity = capacity;
    return 0;
}

/* The row of a word, added (and appended to `fresh` as str) when unseen; -1 on error. */
static int64_t table_row(WordTable *table, const uint8_t *word, Py_ssize_t length, PyObject *fresh) {
    uint64_t h = hash_bytes(word, length);
    int64_t j = h & (table->capacity - 1);
    for (; table->slots[j].row >= 0; j = (j + 1) & (table->capacity - 1)) {
        Slot *slot = &table->slots[j];
        if (slot->hash == h && slot->length == length && memcmp(table->arena + slot->start, word, length) == 0)
            return slot->row;
    }
    if (table->arena_used + length > table->arena_size) {
        int64_t size = (table->arena_size + length) * 2;
        char *arena = PyMem_Realloc(table->arena, size);
        if (!arena) { PyErr_NoMemory(); return -1; }
        table->arena = arena;
        table->arena_size = size;
    }
    PyObject *text = PyUnicode_DecodeUTF8((const char *)word, length, "strict");
    if (!text) return -1;
    int failed = PyList_Append(fresh, text);
    Py_DECREF(text);
    if (failed) return -1;
    memcpy(table->arena + table->arena_used, word, length);
    table->slots[j] = (Slot){h, table->arena_used, table->count, (int32_t)length};
    table->arena_used += length;
    int64_t row = table->count++;
    if (table->count * 2 > table->capacity && table_grow(table) < 0) return -1;
    return row;
}

static PyObject *table_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    PyObject *vocab;
    Py_ssize_t max_chars;
    if (!_PyArg_NoKeywords("WordTable", kwargs) || !PyArg_ParseTuple(args, "O!n:WordTable", &PyDict_Type, &vocab,
                                                                     &max_chars))
        return NULL;
    WordTable *table = (WordTable *)type->tp_alloc(type, 0);
    if (!table) return NULL;
    Py_INCREF(vocab);
    table->vocab = vocab;
    table->max_chars = max_chars;
    PyObject *fresh = PyList_New(0);
    if (!fresh || table_grow(table) < 0 || table_row(table, (const uint8_t *)"\n", 1, fresh) < 0) {
        Py_XDECREF(fresh);
        Py_DECREF(table);
        return NULL;
    }
    Py_DECREF(fresh);
    return (PyObject *)table;
}

static void table_dealloc(WordTable *table) {
    PyMem_Free(table->slots);
    PyMem_Free(table->arena);
    Py_XDECREF(table->vocab);
    Py_TYPE(table)->tp_free((PyObject *)table);
}

static Py_ssize_t table_length(WordTable *table) { return (Py_ssize_t)table->count; }

static inline int is_alnum(uint8_t c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

/* rows(text: str) -> (bytes of (W,) int64 rows, [the unseen words, in order],
                      bytes of their (new,) int64 vocab ids, -1 where a word is not a vocab entry) */
static PyObject *table_rows(WordTable *table, PyObject *arg) {
    Py_ssize_t size;
    const char *utf8 = PyUnicode_AsUTF8AndSize(arg, &size);  /* cached in the str: no copy for ASCII */
    if (!utf8) return NULL;
    const uint8_t *p = (const uint8_t *)utf8, *end = p + size;
    PyObject *fresh = PyList_New(0), *rows = NULL, *known = NULL, *result = NULL;
    /* At most one word per byte. */
    int64_t *out = PyMem_Malloc((size ? size : 1) * sizeof(int64_t));
    if (!fresh || !out) { PyErr_NoMemory(); goto done; }
    Py_ssize_t words = 0;
    while (p < end) {
        uint8_t c = *p;
        const uint8_t *start = p;
        if (c == ' ' || c == '\t' || c == '\r') { p++; continue; }
        if (c == '\n') { out[words++] = 0; p++; continue; }
        if (is_alnum(c)) {
            while (p < end && is_alnum(*p)) p++;
        } else {
            p++;
            if (c >= 0xC0) while (p < end && (*p & 0xC0) == 0x80) p++;  /* one whole UTF-8 character */
        }
        int64_t row = table_row(table, start, p - start, fresh);
        if (row < 0) goto done;
        out[words++] = row;
    }
    rows = PyBytes_FromStringAndSize((const char *)out, words * (Py_ssize_t)sizeof(int64_t));
    Py_ssize_t count = PyList_GET_SIZE(fresh);
    known = PyBytes_FromStringAndSize(NULL, count * (Py_ssize_t)sizeof(int64_t));
    if (!rows || !known) goto done;
    int64_t *ids = (int64_t *)PyBytes_AS_STRING(known);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *word = PyList_GET_ITEM(fresh, i), *id = NULL;
        if (PyUnicode_GET_LENGTH(word) <= table->max_chars && !(id = PyDict_GetItemWithError(table->vocab, word)) &&
            PyErr_Occurred())
            goto done;
        ids[i] = id ? PyLong_AsLongLong(id) : -1;
        if (ids[i] == -1 && PyErr_Occurred()) goto done;
    }
    result = PyTuple_Pack(3, rows, fresh, known);
done:
    PyMem_Free(out);
    Py_XDECREF(rows);
    Py_XDECREF(known);
    Py_XDECREF(fresh);
    return result;
}

static PyMethodDef table_methods[] = {
    {"rows", (PyCFunction)table_rows, METH_O,
     "rows(text: str) -> (bytes of (W,) int64 word rows, [unseen words in order], bytes of their int64 vocab ids or "
     "-1); a line end is row 0."},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods table_sequence = {.sq_length = (lenfunc)table_length};

PyTypeObject WordTableType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mindtransformer.data._records_c.WordTable",
    .tp_basicsize = sizeof(WordTable),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "WordTable(vocab, max_chars): word -> row; rows(text) splits text into BERT's words and numbers the "
              "unseen ones.",
    .tp_new = table_new,
    .tp_dealloc = (destructor)table_dealloc,
    .tp_methods = table_methods,
    .tp_as_sequence = &table_sequence,
};

