/* Greedy longest-match over a byte trie: the RWKV World tokenizer's rule, in C.
 *
 * `backend.tokenizer` explains when this runs; this file is only the matcher. The reference
 * (rwkv.rwkv_tokenizer.TRIE_TOKENIZER) walks a byte trie from each position and takes the longest
 * vocab entry that prefixes the rest of the input; so does ByteTrie.encode, without the Python
 * interpreter in the loop.
 *
 * Layout, chosen so that each byte of the walk costs at most one access to a small table (most tokens
 * are 1-4 bytes, and the walk's time goes to cache misses):
 *   - a node's `info` is (id + 1) | HAS_CHILDREN, 0 for a prefix no token ends at; HAS_CHILDREN stops
 *     the walk at leaves without a probe;
 *   - the 1- and 2-byte prefixes are dense tables indexed by the bytes (depth1[b0], depth2[b0 | b1 << 8]);
 *   - deeper prefixes live in one open-addressing hash table keyed by (parent << 8 | byte), sized for
 *     the vocab (load <= 1/2): a node's number is its slot, and a 2-byte prefix p is node size + p, so
 *     an entry holds the key and the info and nothing needs a second lookup.
 * Long inputs are matched without the GIL; each id's int object is made once at build, so the list that
 * encode returns only copies references.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define EMPTY_KEY 0xFFFFFFFFu
#define HAS_CHILDREN 0x80000000u
#define ID_MASK 0x7FFFFFFFu
#define MAX_TABLE (1u << 23) /* node numbers (< 2 * size) must fit in 24 bits of a key */
/* Inputs this long (~0.5 ms of matching) run without the GIL. Shorter ones keep it: a thread that lets go
 * of the GIL may wait a whole switch interval (5 ms) to get it back from a busy one, such as the engine's. */
#define RELEASE_GIL_BYTES (1 << 16)

typedef struct {
    uint32_t key;  /* parent << 8 | byte, EMPTY_KEY if the slot is free */
    uint32_t info; /* of the node this slot is */
} Edge;

typedef struct {
    PyObject_HEAD
    uint32_t depth1[256];
    uint32_t *depth2; /* [65536] */
    Edge *edges;      /* [size] */
    uint32_t size;    /* a power of two */
    int shift;        /* 32 - log2(size), for the multiplicative hash */
    PyObject **ints;  /* [n_ids] the int object of each id */
    Py_ssize_t n_ids;
} ByteTrie;

static inline uint32_t first_slot(uint32_t key, int shift) {
    return (key * 2654435761u) >> shift;
}

/* The slot of key in the table, or of the free slot where it would go. */
static inline uint32_t find_slot(const ByteTrie *t, uint32_t key) {
    uint32_t h = first_slot(key, t->shift);
    while (t->edges[h].key != key && t->edges[h].key != EMPTY_KEY) h = (h + 1) & (t->size - 1);
    return h;
}

static void trie_free_tables(ByteTrie *t) {
    PyMem_RawFree(t->depth2);
    PyMem_RawFree(t->edges);
    t->depth2 = NULL;
    t->edges = NULL;
    if (t->ints != NULL) {
        for (Py_ssize_t i = 0; i < t->n_ids; i++) Py_XDECREF(t->ints[i]);
        PyMem_Free(t->ints);
        t->ints = NULL;
    }
}

static void trie_dealloc(ByteTrie *t) {
    trie_free_tables(t);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

/* Insert every token into a table of t->size slots; -1 if the table got over half full. */
static int insert_all(ByteTrie *t, PyObject **items, Py_ssize_t n) {
    memset(t->depth1, 0, sizeof t->depth1);
    memset(t->depth2, 0, 65536 * sizeof(uint32_t));
    memset(t->edges, 0xFF, (size_t)t->size * sizeof(Edge)); /* every key EMPTY_KEY */
    uint32_t used = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        const uint8_t *s = (const uint8_t *)PyBytes_AS_STRING(items[i]);
        Py_ssize_t len = PyBytes_GET_SIZE(items[i]);
        if (len == 0) continue; /* ids without bytes (END_OF_TEXT) are never matched */
        uint32_t *info = &t->depth1[s[0]];
        uint32_t node = 0;
        for (Py_ssize_t d = 1; d < len; d++) {
            *info |= HAS_CHILDREN;
            if (d == 1) {
                uint32_t prefix = s[0] | (uint32_t)s[1] << 8;
                info = &t->depth2[prefix];
                node = t->size + prefix;
                continue;
            }
            uint32_t key = node << 8 | s[d];
            uint32_t h = find_slot(t, key);
            if (t->edges[h].key == EMPTY_KEY) {
                if (2 * ++used > t->size) return -1;
                t->edges[h].key = key;
                t->edges[h].info = 0;
            }
            info = &t->edges[h].info;
            node = h;
        }
        *info = (*info & HAS_CHILDREN) | ((uint32_t)i + 1); /* a repeated entry: the last id wins */
    }
    return 0;
}

static int trie_build(ByteTrie *t, PyObject *fast) {
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    PyObject **items = PySequence_Fast_ITEMS(fast);
    if (n >= (Py_ssize_t)ID_MASK) {
        PyErr_Format(PyExc_ValueError, "tokens: %zd ids, at most %u fit", n, ID_MASK - 1);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!PyBytes_Check(items[i])) {
            PyErr_Format(PyExc_TypeError, "tokens[%zd]: expected bytes, got %.100s", i, Py_TYPE(items[i])->tp_name);
            return -1;
        }
    }
    if ((t->depth2 = PyMem_RawMalloc(65536 * sizeof(uint32_t))) == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    /* Start small and double until the vocab's deep prefixes fill at most half the table. */
    for (t->size = 1u << 12, t->shift = 20;; t->size <<= 1, t->shift--) {
        PyMem_RawFree(t->edges);
        if ((t->edges = PyMem_RawMalloc((size_t)t->size * sizeof(Edge))) == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        if (insert_all(t, items, n) == 0) break;
        if (t->size == MAX_TABLE) {
            PyErr_Format(PyExc_ValueError, "tokens: more than %u distinct prefixes", MAX_TABLE / 2);
            return -1;
        }
    }
    if ((t->ints = PyMem_Calloc(n > 0 ? (size_t)n : 1, sizeof(PyObject *))) == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    t->n_ids = n;
    for (Py_ssize_t i = 0; i < n; i++) {
        if ((t->ints[i] = PyLong_FromSsize_t(i)) == NULL) return -1;
    }
    return 0;
}

static PyObject *trie_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"tokens", NULL};
    PyObject *tokens;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:ByteTrie", kwlist, &tokens)) return NULL;
    PyObject *fast = PySequence_Fast(tokens, "tokens: expected a sequence of bytes");
    if (fast == NULL) return NULL;
    ByteTrie *t = (ByteTrie *)type->tp_alloc(type, 0);
    if (t != NULL && trie_build(t, fast) < 0) Py_CLEAR(t);
    Py_DECREF(fast);
    return (PyObject *)t;
}

/* Greedy longest match of s[0..n) into out; returns the count, or -(1 + offset) of a byte with no token. */
static Py_ssize_t match_all(const ByteTrie *t, const uint8_t *s, Py_ssize_t n, int32_t *out) {
    const Edge *edges = t->edges;
    const uint32_t mask = t->size - 1;
    const int shift = t->shift;
    Py_ssize_t count = 0, i = 0;
    while (i < n) {
        uint32_t info = t->depth1[s[i]];
        uint32_t best = info & ID_MASK; /* id + 1, 0 while no token matched */
        Py_ssize_t best_len = 1;
        if ((info & HAS_CHILDREN) && i + 1 < n) {
            uint32_t prefix = s[i] | (uint32_t)s[i + 1] << 8;
            info = t->depth2[prefix];
            uint32_t node = t->size + prefix;
            for (Py_ssize_t j = i + 2; info != 0;) {
                if (info & ID_MASK) {
                    best = info & ID_MASK;
                    best_len = j - i;
                }
                if (!(info & HAS_CHILDREN) || j == n) break;
                uint32_t key = node << 8 | s[j];
                uint32_t h = first_slot(key, shift);
                while (edges[h].key != key && edges[h].key != EMPTY_KEY) h = (h + 1) & mask;
                info = edges[h].key == key ? edges[h].info : 0;
                node = h;
                j++;
            }
        }
        if (best == 0) return -(1 + i);
        out[count++] = (int32_t)(best - 1);
        i += best_len;
    }
    return count;
}

static PyObject *trie_encode(ByteTrie *t, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    Py_ssize_t n = view.len;
    int32_t *out = PyMem_RawMalloc((size_t)(n > 0 ? n : 1) * sizeof(int32_t)); /* at most one id per byte */
    if (out == NULL) {
        PyBuffer_Release(&view);
        return PyErr_NoMemory();
    }
    Py_ssize_t count;
    if (n >= RELEASE_GIL_BYTES) {
        Py_BEGIN_ALLOW_THREADS
        count = match_all(t, (const uint8_t *)view.buf, n, out);
        Py_END_ALLOW_THREADS
    } else {
        count = match_all(t, (const uint8_t *)view.buf, n, out);
    }
    PyObject *list = NULL;
    if (count < 0) {
        Py_ssize_t at = -count - 1;
        PyErr_Format(PyExc_ValueError, "byte 0x%02x at offset %zd starts no token of the vocab",
                     ((const uint8_t *)view.buf)[at], at);
    } else if ((list = PyList_New(count)) != NULL) {
        for (Py_ssize_t k = 0; k < count; k++) {
            PyObject *id = t->ints[out[k]];
            Py_INCREF(id);
            PyList_SET_ITEM(list, k, id);
        }
    }
    PyMem_RawFree(out);
    PyBuffer_Release(&view);
    return list;
}

static PyMethodDef trie_methods[] = {
    {"encode", (PyCFunction)trie_encode, METH_O,
     "encode(data) -> list[int]: ids of the longest-match tokenization of a bytes-like object."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ByteTrieType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "backend.tokenizer_trie.ByteTrie",
    .tp_doc = "ByteTrie(tokens): tokens[i] is the byte string of id i (b'' for ids never matched).",
    .tp_basicsize = sizeof(ByteTrie),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = trie_new,
    .tp_dealloc = (destructor)trie_dealloc,
    .tp_methods = trie_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "backend.tokenizer_trie",
    .m_doc = "Greedy longest-match tokenization over a byte trie (the RWKV World rule).",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit_tokenizer_trie(void) {
    if (PyType_Ready(&ByteTrieType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&ByteTrieType);
    if (PyModule_AddObject(m, "ByteTrie", (PyObject *)&ByteTrieType) < 0) {
        Py_DECREF(&ByteTrieType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
