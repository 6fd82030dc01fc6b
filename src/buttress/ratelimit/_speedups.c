/* The fast paths of RateLimiter.try_acquire in memory, compiled.
 *
 * The reference is src/buttress/ratelimit/_inmemory.py: FastPath does, step for step, what
 * the closures of InMemory._keyed_by_id (one identified scope, keyed by a str id) and
 * InMemory._keyed_by_context (several scopes, keyed by a dict context) do, followed by
 * Recorder.conclude (_stats.py); those run wherever this module is not built or
 * BUTTRESS_NO_EXTENSIONS is set. Under the memory backend's lock: read every scope's state,
 * admit each in turn, and only if all admit store every new state (the hierarchical rule of
 * admit_all); then build a lazy Decision, count it and announce it (a refusal through
 * Recorder.refused). A call it cannot take as is (another key type, a cost other than 1, an id
 * that is not a str or is longer than MAX_ID_LENGTH, callers queued, an id with a limit of its
 * own: a key in `routed`) goes to the general method.
 * A token bucket's admit (GCRA, its state the TAT as two doubles) is done here with the same
 * float operations in the same order as TokenBucket.admit; other algorithms call their Python
 * admit.
 * tests/ratelimit/test_speedups.py runs the compiled and the Python paths side by side.
 *
 * Why C at all: a thread-safe decision in CPython costs about 400 ns of interpreter work
 * before it decides anything (a call, a lock, a clock read, a dict, a result object); here
 * those are plain C calls.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <math.h>

#if PY_VERSION_HEX < 0x030C0000
#define Py_T_OBJECT_EX T_OBJECT_EX
#endif

#define MAX_SCOPES 8
/* Ids longer than this (in characters) are hashed into their key by the general path
 * (ratelimit/_keys.py: MAX_ID_LENGTH, which _inmemory checks equal to this). */
#define MAX_ID_LENGTH 256

static PyObject *one; /* the int 1: CPython keeps one object for it, as `cost is 1` assumes */

typedef struct {
    PyObject *prefix; /* the storage key without the id, or the whole key of a shared scope */
    PyObject *by;     /* the context's name for this scope's id; NULL for a shared scope */
    PyObject *by_id;  /* the fallback name (``user_id`` for ``user``) */
    PyObject *admit;  /* admit(state, now, cost) */
    int gcra;         /* a token bucket: admitted here */
    double interval;  /* TokenBucket.interval and .reach */
    double reach;
} Part; /* one scope; its objects are borrowed from FastPath.scopes */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    /* Python objects, all owned; keep them together: traverse and clear walk this block. */
    PyObject *general;       /* RateLimiter.try_acquire, bound: every call not taken here */
    PyObject *scopes;        /* tuple of (prefix, by, by_id, admit, interval, reach) */
    PyObject *states;        /* the memory backend's dict: storage key -> state */
    PyObject *acquire;       /* its lock's acquire and release */
    PyObject *release;
    PyObject *grew;          /* grew(now, keys) -> bool, when a key was added (under the lock) */
    PyObject *cap_reached;   /* cap_reached(), when grew returned true (unlocked) */
    PyObject *monotonic;     /* the limiter's clock */
    PyObject *queues;        /* dict: storage key -> waiters; non-empty sends calls to general */
    PyObject *frame;         /* the limiter's Frame, for the lazy decision */
    PyObject *mark;          /* Counters.mark(now) -> when the next mark is due */
    PyObject *measure;       /* Counters.measure(latency) */
    PyObject *admitted;      /* Counters.admitted: an itertools.count */
    PyObject *attached;      /* events.attached: a dict, empty when nobody listens */
    PyObject *on_allowed;    /* on_allowed(decision): announce an admission */
    PyObject *on_refused;    /* on_refused(decision, now, cost) -> decision: count, announce */
    PyObject *decision_type; /* Decision */
    PyObject *routed;        /* dict: storage keys of ids with a limit of their own -> None;
                              * a call touching one goes to general */
#define N_OBJECTS 18
    int context;             /* keyed by a dict context (else by a str id, one scope) */
    Py_ssize_t n;            /* how many scopes */
    Part parts[MAX_SCOPES];
    double next_mark;
    Py_ssize_t off_details, off_resolved, off_allowed; /* Decision's slots */
} FastPath;

static PyObject **
objects(FastPath *self)
{
    return &self->general;
}

/* Call a callable with no arguments, discarding the result; -1 on error. */
static int
call0(PyObject *callable)
{
    PyObject *r = PyObject_CallNoArgs(callable);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* Release the backend's lock, keeping an exception already set (if any) as the one raised. */
static int
unlock(FastPath *self, int failed)
{
    if (!failed) {
        return call0(self->release);
    }
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *raised = PyErr_GetRaisedException();
    if (call0(self->release) < 0) {
        PyErr_Clear();
    }
    PyErr_SetRaisedException(raised);
#else
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (call0(self->release) < 0) {
        PyErr_Clear();
    }
    PyErr_Restore(type, value, tb);
#endif
    return -1;
}

/* Store an owned reference in one of the decision's slots (they start empty). */
static inline void
put(PyObject *decision, Py_ssize_t offset, PyObject *value)
{
    *(PyObject **)((char *)decision + offset) = value;
}

/* The storage keys of this call (new references), as keys_reader reads them: from a dict
 * context, or (one identified scope) from a str id as well.
 * 1: done; 0: not a call for this path (nothing set); -1: error. */
static int
read_keys(FastPath *self, PyObject *arg, PyObject **keys)
{
    if (!self->context && PyUnicode_CheckExact(arg)) {
        if (PyUnicode_GET_LENGTH(arg) > MAX_ID_LENGTH) {
            return 0;
        }
        keys[0] = PyUnicode_Concat(self->parts[0].prefix, arg);
        return keys[0] == NULL ? -1 : 1;
    }
    if (!PyDict_CheckExact(arg)) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < self->n; i++) {
        Part *part = &self->parts[i];
        PyObject *key = NULL;
        if (part->by == NULL) {
            key = Py_NewRef(part->prefix);
        }
        else {
            PyObject *id = PyDict_GetItemWithError(arg, part->by);
            if (id == NULL && PyErr_Occurred()) {
                goto fail;
            }
            if (id == NULL || id == Py_None) {
                id = PyDict_GetItemWithError(arg, part->by_id);
                if (id == NULL && PyErr_Occurred()) {
                    goto fail;
                }
            }
            if (id == NULL || !PyUnicode_CheckExact(id)
                || PyUnicode_GET_LENGTH(id) > MAX_ID_LENGTH) {
                for (Py_ssize_t j = 0; j < i; j++) {
                    Py_CLEAR(keys[j]);
                }
                return 0;
            }
            key = PyUnicode_Concat(part->prefix, id);
            if (key == NULL) {
                goto fail;
            }
        }
        keys[i] = key;
        continue;
    fail:
        for (Py_ssize_t j = 0; j < i; j++) {
            Py_CLEAR(keys[j]);
        }
        return -1;
    }
    return 1;
}

/* Python's math.ulp for a finite double: the gap from |x| to the next double away from zero. */
static double
ulp(double x)
{
    x = fabs(x);
    return nextafter(x, INFINITY) - x;
}

/* One scope's new state for cost 1 at `now` (a new reference; None when refused). */
static PyObject *
admit(Part *part, PyObject *state, PyObject *now_obj, double now)
{
    if (part->gcra && PyFloat_CheckExact(now_obj)
        && (state == NULL
            || (PyTuple_CheckExact(state) && PyTuple_GET_SIZE(state) == 2
                && PyFloat_CheckExact(PyTuple_GET_ITEM(state, 0))
                && PyFloat_CheckExact(PyTuple_GET_ITEM(state, 1))))) {
        /* TokenBucket.admit with cost 1: ``cost * interval`` is ``interval`` exactly.
         * volatile: each result rounded to a double, as Python's, even with x87 registers */
        volatile double ahead;
        if (state == NULL) {
            ahead = part->interval;
        }
        else {
            ahead = PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(state, 0)) - now;
            ahead = ahead + PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(state, 1));
            ahead = (ahead > 0.0 ? ahead : 0.0) + part->interval;
        }
        if (ahead > part->reach) {
            return Py_NewRef(Py_None);
        }
        /* _tat: the TAT rounded up to a double, and what the rounding added */
        volatile double tat = now + ahead;
        if (tat - now < ahead) {
            tat = tat + ulp(tat);
        }
        volatile double low = ahead - (tat - now);
        PyObject *fresh = PyTuple_New(2);
        if (fresh == NULL) {
            return NULL;
        }
        PyObject *f = PyFloat_FromDouble(tat);
        if (f == NULL) {
            Py_DECREF(fresh);
            return NULL;
        }
        PyTuple_SET_ITEM(fresh, 0, f);
        f = PyFloat_FromDouble(low);
        if (f == NULL) {
            Py_DECREF(fresh);
            return NULL;
        }
        PyTuple_SET_ITEM(fresh, 1, f);
        return fresh;
    }
    PyObject *args[3] = {state == NULL ? Py_None : state, now_obj, one};
    return PyObject_Vectorcall(part->admit, args, 3, NULL);
}

/* Under the lock: admit_all. Reads every state into `olds` (new references, NULL for none),
 * admits scope after scope, and when all admit stores every new state and sets *admitted.
 * Sets *added when the dict grew. -1 on error. */
static int
decide(FastPath *self, PyObject **keys, PyObject **olds, PyObject *now_obj, double now,
       int *admitted, int *added)
{
    PyObject *fresh[MAX_SCOPES];
    Py_ssize_t n = self->n;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *state = PyDict_GetItemWithError(self->states, keys[i]);
        if (state == NULL && PyErr_Occurred()) {
            return -1;
        }
        olds[i] = Py_XNewRef(state);
    }
    Py_ssize_t made = 0;
    int result = 0;
    for (; made < n; made++) {
        fresh[made] = admit(&self->parts[made], olds[made], now_obj, now);
        if (fresh[made] == NULL) {
            result = -1;
            goto done;
        }
        if (fresh[made] == Py_None) {
            made++;
            goto done; /* refused: nothing is written */
        }
    }
    Py_ssize_t held = PyDict_GET_SIZE(self->states);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (PyDict_SetItem(self->states, keys[i], fresh[i]) < 0) {
            result = -1;
            goto done;
        }
    }
    *admitted = 1;
    *added = PyDict_GET_SIZE(self->states) != held;
done:
    for (Py_ssize_t i = 0; i < made; i++) {
        Py_DECREF(fresh[i]);
    }
    return result;
}

/* A tuple (or, for one scope, the one item) of `n` references, None for NULL. */
static PyObject *
pack(PyObject **items, Py_ssize_t n, int as_list)
{
    PyObject *out = as_list ? PyList_New(n) : PyTuple_New(n);
    if (out == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = Py_NewRef(items[i] == NULL ? Py_None : items[i]);
        if (as_list) {
            PyList_SET_ITEM(out, i, item);
        }
        else {
            PyTuple_SET_ITEM(out, i, item);
        }
    }
    return out;
}

static PyObject *
fast_call(FastPath *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *keys[MAX_SCOPES] = {NULL};
    PyObject *olds[MAX_SCOPES] = {NULL};
    if (kwnames != NULL || (nargs != 1 && !(nargs == 2 && args[1] == one))
        || PyDict_GET_SIZE(self->queues) != 0) {
        return PyObject_Vectorcall(self->general, args, nargsf, kwnames);
    }
    int found = read_keys(self, args[0], keys);
    if (found <= 0) {
        return found < 0 ? NULL : PyObject_Vectorcall(self->general, args, nargsf, kwnames);
    }
    Py_ssize_t n = self->n;
    if (PyDict_GET_SIZE(self->routed) != 0) { /* per-id limits: decided by the general path */
        int routed = 0;
        for (Py_ssize_t i = 0; i < n && routed == 0; i++) {
            routed = PyDict_Contains(self->routed, keys[i]);
        }
        if (routed != 0) {
            for (Py_ssize_t i = 0; i < n; i++) {
                Py_XDECREF(keys[i]);
            }
            return routed < 0 ? NULL : PyObject_Vectorcall(self->general, args, nargsf, kwnames);
        }
    }
    PyObject *decision = NULL, *result = NULL, *now_obj = PyObject_CallNoArgs(self->monotonic);
    if (now_obj == NULL) {
        goto done;
    }
    double now = PyFloat_AsDouble(now_obj);
    if (now == -1.0 && PyErr_Occurred()) {
        goto done;
    }
    if (call0(self->acquire) < 0) {
        goto done;
    }
    int admitted = 0, added = 0, grew = 0;
    int failed = decide(self, keys, olds, now_obj, now, &admitted, &added) < 0;
    if (!failed && added) {
        PyObject *key_list = self->context ? pack(keys, n, 0) : PyTuple_Pack(1, keys[0]);
        PyObject *answer = NULL;
        if (key_list != NULL) {
            PyObject *grew_args[2] = {now_obj, key_list};
            answer = PyObject_Vectorcall(self->grew, grew_args, 2, NULL);
            Py_DECREF(key_list);
        }
        failed = answer == NULL || (grew = PyObject_IsTrue(answer)) < 0;
        Py_XDECREF(answer);
    }
    if (unlock(self, failed) < 0) {
        goto done;
    }
    if (grew && call0(self->cap_reached) < 0) {
        goto done;
    }
    if (now >= self->next_mark) {
        PyObject *due = PyObject_CallOneArg(self->mark, now_obj);
        if (due == NULL) {
            goto done;
        }
        double next_mark = PyFloat_AsDouble(due);
        Py_DECREF(due);
        if (next_mark == -1.0 && PyErr_Occurred()) {
            goto done;
        }
        self->next_mark = next_mark;
    }
    PyTypeObject *type = (PyTypeObject *)self->decision_type;
    decision = type->tp_alloc(type, 0);
    if (decision == NULL) {
        goto done;
    }
    PyObject *details;
    if (self->context) {
        PyObject *key_list = pack(keys, n, 1);
        PyObject *states = key_list == NULL ? NULL : pack(olds, n, 0);
        details = states == NULL ? NULL : PyTuple_Pack(5, self->frame, key_list, states, now_obj, one);
        Py_XDECREF(key_list);
        Py_XDECREF(states);
    }
    else {
        details = PyTuple_Pack(
            5, self->frame, keys[0], olds[0] == NULL ? Py_None : olds[0], now_obj, one);
    }
    if (details == NULL) {
        goto done;
    }
    put(decision, self->off_details, details);
    put(decision, self->off_resolved, Py_NewRef(Py_None));
    if (!admitted) {
        PyObject *refused_args[3] = {decision, now_obj, one};
        result = PyObject_Vectorcall(self->on_refused, refused_args, 3, NULL);
        goto done;
    }
    put(decision, self->off_allowed, Py_NewRef(Py_True));
    PyObject *count = PyIter_Next(self->admitted);
    if (count == NULL) {
        goto done;
    }
    long number = PyLong_AsLong(count);
    Py_DECREF(count);
    if (number == -1 && PyErr_Occurred()) {
        goto done;
    }
    if ((number & 15) == 0) { /* one decision in 16 is timed, as in the Python path */
        PyObject *later = PyObject_CallNoArgs(self->monotonic);
        if (later == NULL) {
            goto done;
        }
        PyObject *latency = PyNumber_Subtract(later, now_obj);
        Py_DECREF(later);
        if (latency == NULL) {
            goto done;
        }
        PyObject *r = PyObject_CallOneArg(self->measure, latency);
        Py_DECREF(latency);
        if (r == NULL) {
            goto done;
        }
        Py_DECREF(r);
    }
    if (PyDict_GET_SIZE(self->attached) != 0) {
        PyObject *r = PyObject_CallOneArg(self->on_allowed, decision);
        if (r == NULL) {
            goto done;
        }
        Py_DECREF(r);
    }
    result = Py_NewRef(decision);
done:
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_XDECREF(keys[i]);
        Py_XDECREF(olds[i]);
    }
    Py_XDECREF(now_obj);
    Py_XDECREF(decision);
    return result;
}

/* The offset of one of `type`'s __slots__, checked to be an object slot. */
static Py_ssize_t
slot_offset(PyObject *type, const char *name)
{
    PyObject *descr = PyObject_GetAttrString(type, name);
    if (descr == NULL) {
        return -1;
    }
    Py_ssize_t offset = -1;
    if (Py_IS_TYPE(descr, &PyMemberDescr_Type)
        && ((PyMemberDescrObject *)descr)->d_member->type == Py_T_OBJECT_EX) {
        offset = ((PyMemberDescrObject *)descr)->d_member->offset;
    }
    else {
        PyErr_Format(PyExc_TypeError, "decision_type.%s must be a __slots__ entry", name);
    }
    Py_DECREF(descr);
    return offset;
}

/* Read the `scopes` tuple into `parts` (borrowing from it); -1 (TypeError, ValueError) if
 * malformed. */
static int
read_scopes(Part *parts, PyObject *scopes, int context)
{
    Py_ssize_t n = PyTuple_GET_SIZE(scopes);
    if (n < 1 || n > MAX_SCOPES || (!context && n != 1)) {
        PyErr_Format(PyExc_ValueError,
                     "FastPath takes 1 to %d scopes (1 unless keyed by a context), got %zd",
                     MAX_SCOPES, n);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(scopes, i);
        Part *part = &parts[i];
        if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 6) {
            PyErr_SetString(PyExc_TypeError,
                            "scopes are (prefix, by, by_id, admit, interval, reach) tuples");
            return -1;
        }
        part->prefix = PyTuple_GET_ITEM(item, 0);
        part->by = PyTuple_GET_ITEM(item, 1);
        part->by_id = PyTuple_GET_ITEM(item, 2);
        part->admit = PyTuple_GET_ITEM(item, 3);
        PyObject *interval = PyTuple_GET_ITEM(item, 4);
        PyObject *reach = PyTuple_GET_ITEM(item, 5);
        if (part->by == Py_None) {
            part->by = part->by_id = NULL;
        }
        /* Exact str ids' names only: a subclass may hash or compare otherwise. */
        if (!PyUnicode_CheckExact(part->prefix)
            || (part->by != NULL
                && (!PyUnicode_CheckExact(part->by) || !PyUnicode_CheckExact(part->by_id)))
            || (!context && part->by == NULL) || !PyCallable_Check(part->admit)) {
            PyErr_Format(PyExc_TypeError,
                         "scope %zd: prefix, by and by_id must be str, admit callable", i);
            return -1;
        }
        part->gcra = interval != Py_None;
        if (part->gcra) {
            part->interval = PyFloat_AsDouble(interval);
            if (part->interval == -1.0 && PyErr_Occurred()) {
                return -1;
            }
            part->reach = PyFloat_AsDouble(reach);
            if (part->reach == -1.0 && PyErr_Occurred()) {
                return -1;
            }
        }
    }
    return 0;
}

static int
fast_init(FastPath *self, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {
        "general", "scopes", "states", "acquire", "release", "grew", "cap_reached",
        "monotonic", "queues", "frame", "mark", "measure", "admitted", "attached",
        "on_allowed", "on_refused", "decision_type", "routed", "context", "next_mark", NULL};
    PyObject *given[N_OBJECTS];
    Part parts[MAX_SCOPES];
    int context;
    double next_mark;
    if (self->general != NULL) {
        /* Parts borrow from the scopes held: replacing them under a running call would
         * leave it reading freed objects. */
        PyErr_SetString(PyExc_TypeError, "FastPath is already initialised");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(
            args, kwargs, "|$OO!O!OOOOOO!OOOOO!OOO!O!pd:FastPath", names, &given[0],
            &PyTuple_Type, &given[1], &PyDict_Type, &given[2], &given[3], &given[4],
            &given[5], &given[6], &given[7], &PyDict_Type, &given[8], &given[9], &given[10],
            &given[11], &given[12], &PyDict_Type, &given[13], &given[14], &given[15],
            &PyType_Type, &given[16], &PyDict_Type, &given[17], &context, &next_mark)) {
        return -1;
    }
    /* Every argument is required: "|$" only makes them keyword-only. */
    for (int i = 0; names[i] != NULL; i++) {
        if (kwargs == NULL || PyDict_GetItemString(kwargs, names[i]) == NULL) {
            PyErr_Format(PyExc_TypeError, "FastPath() needs %s=", names[i]);
            return -1;
        }
    }
    if (!PyDict_CheckExact(given[2]) || !PyDict_CheckExact(given[8])
        || !PyDict_CheckExact(given[13]) || !PyDict_CheckExact(given[17])) {
        PyErr_SetString(PyExc_TypeError, "states, queues, attached and routed must be plain dicts");
        return -1;
    }
    Py_ssize_t off_details = slot_offset(given[16], "_details");
    Py_ssize_t off_resolved = off_details < 0 ? -1 : slot_offset(given[16], "_resolved");
    Py_ssize_t off_allowed = off_resolved < 0 ? -1 : slot_offset(given[16], "allowed");
    if (off_allowed < 0 || read_scopes(parts, given[1], context) < 0) {
        return -1;
    }
    PyObject **held = objects(self);
    for (int i = 0; i < N_OBJECTS; i++) {
        held[i] = Py_NewRef(given[i]);
    }
    self->n = PyTuple_GET_SIZE(given[1]);
    memcpy(self->parts, parts, sizeof(Part) * (size_t)self->n);
    self->context = context;
    self->next_mark = next_mark;
    self->off_details = off_details;
    self->off_resolved = off_resolved;
    self->off_allowed = off_allowed;
    self->vectorcall = (vectorcallfunc)fast_call;
    return 0;
}

static PyObject *
fast_call_fallback(PyObject *self, PyObject *args, PyObject *kwargs)
{
    if (((FastPath *)self)->vectorcall == NULL) {
        PyErr_SetString(PyExc_TypeError, "FastPath is not initialised");
        return NULL;
    }
    return PyVectorcall_Call(self, args, kwargs);
}

static int
fast_traverse(FastPath *self, visitproc visit, void *arg)
{
    PyObject **held = objects(self);
    for (int i = 0; i < N_OBJECTS; i++) {
        Py_VISIT(held[i]);
    }
    return 0;
}

static int
fast_clear(FastPath *self)
{
    self->vectorcall = NULL; /* parts borrow from `scopes`: a cleared path must not run */
    self->n = 0;
    PyObject **held = objects(self);
    for (int i = 0; i < N_OBJECTS; i++) {
        Py_CLEAR(held[i]);
    }
    return 0;
}

static void
fast_dealloc(FastPath *self)
{
    PyObject_GC_UnTrack(self);
    fast_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
fast_wrapped(FastPath *self, void *closure)
{
    if (self->general == NULL) {
        Py_RETURN_NONE;
    }
    return Py_NewRef(self->general);
}

/* __doc__, __name__, __qualname__: the general method's, so that the path reads as it does. */
static PyObject *
fast_forward(FastPath *self, void *name)
{
    if (self->general == NULL) {
        Py_RETURN_NONE;
    }
    return PyObject_GetAttrString(self->general, (const char *)name);
}

static PyObject *
fast_repr(FastPath *self)
{
    if (self->general == NULL) {
        return PyUnicode_FromString("<buttress compiled fast path (not initialised)>");
    }
    return PyUnicode_FromFormat("<buttress compiled fast path of %R>", self->general);
}

static PyGetSetDef fast_getset[] = {
    {"__wrapped__", (getter)fast_wrapped, NULL, "The general method this path stands in for."},
    {"__doc__", (getter)fast_forward, NULL, NULL, "__doc__"},
    {"__name__", (getter)fast_forward, NULL, NULL, "__name__"},
    {"__qualname__", (getter)fast_forward, NULL, NULL, "__qualname__"},
    {NULL},
};

static PyTypeObject FastPathType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "buttress.ratelimit._speedups.FastPath",
    .tp_basicsize = sizeof(FastPath),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)fast_init,
    .tp_dealloc = (destructor)fast_dealloc,
    .tp_traverse = (traverseproc)fast_traverse,
    .tp_clear = (inquiry)fast_clear,
    .tp_call = fast_call_fallback,
    .tp_vectorcall_offset = offsetof(FastPath, vectorcall),
    .tp_getset = fast_getset,
    .tp_repr = (reprfunc)fast_repr,
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "buttress.ratelimit._speedups",
    .m_doc = "The compiled fast paths of a rate limiter in memory (see _speedups.c).",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (PyType_Ready(&FastPathType) < 0) {
        return NULL;
    }
    one = PyLong_FromLong(1);
    if (one == NULL) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&speedups_module);
    if (module == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(module, "FastPath", (PyObject *)&FastPathType) < 0
        || PyModule_AddIntConstant(module, "MAX_SCOPES", MAX_SCOPES) < 0
        || PyModule_AddIntConstant(module, "MAX_ID_LENGTH", MAX_ID_LENGTH) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
