/*
 * pmpi_count.c: count the bytes this process hands to MPI.
 *
 * Preloaded into every rank (mpiexec -genv LD_PRELOAD <this .so>), the
 * wrappers below stand in front of the MPI library: each one calls the
 * PMPI_ entry point it wraps and, if that succeeded, adds to per-process
 * counters.  Nothing else changes; the job, mpi4py and Bodo's compiled
 * code call MPI_* as before and reach these wrappers first.
 *
 * The counts are logical bytes, the same rule as datajax.mpi.Comm: for
 * each call, element counts times MPI_Type_size, only for the parts that
 * go to or come from *other* ranks, as if the call were written with
 * point-to-point messages.  An allreduce counts every rank's buffer
 * reaching the size - 1 others; a reduce counts it reaching the root; a
 * scan counts rank r receiving from the r ranks below it.  Bytes MPICH
 * adds on the wire (tree and ring algorithms, headers) are not seen.
 *
 * Limits, said here because this is where they live:
 *  - Nonblocking calls count at the call.  A receive posted with
 *    MPI_Irecv counts the size of the posted buffer, an upper bound on
 *    what arrives; blocking receives count what the status says arrived.
 *  - Persistent requests (MPI_*_init) count at every MPI_Start(all).
 *  - Collectives on intercommunicators are counted as calls but not as
 *    bytes (the "uncounted" counter says how many there were).
 *  - Neighborhood collectives, one-sided (RMA) calls and MPI-IO are not
 *    wrapped: neither Bodo nor DataJAX uses the first two, and MPI-IO
 *    moves file data, not data between ranks.  Barriers carry no data.
 *
 * Readers with C linkage (datajax_pmpi_*) are at the end, for ctypes.
 */

#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <mpi.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* Bump when a reader's signature or meaning changes. */
#define DJ_READER_VERSION 1

typedef unsigned long long dj_u64;

/* ---------------------------------------------------------------------
 * The operations: one slot of counters per wrapped entry point.
 *
 * A family F with nonblocking name MPI_I<f> has six entry points:
 * MPI_F, MPI_F_c, MPI_If, MPI_If_c, MPI_F_init and MPI_F_init_c.
 */

#define DJ_COLLECTIVES(X)                                                 \
    X(Bcast, bcast)                                                       \
    X(Gather, gather)                                                     \
    X(Gatherv, gatherv)                                                   \
    X(Scatter, scatter)                                                   \
    X(Scatterv, scatterv)                                                 \
    X(Allgather, allgather)                                               \
    X(Allgatherv, allgatherv)                                             \
    X(Alltoall, alltoall)                                                 \
    X(Alltoallv, alltoallv)                                               \
    X(Alltoallw, alltoallw)                                               \
    X(Reduce, reduce)                                                     \
    X(Allreduce, allreduce)                                               \
    X(Reduce_scatter, reduce_scatter)                                     \
    X(Reduce_scatter_block, reduce_scatter_block)                         \
    X(Scan, scan)                                                         \
    X(Exscan, exscan)

#define DJ_SENDS(X)                                                       \
    X(Send, send)                                                         \
    X(Ssend, ssend)                                                       \
    X(Rsend, rsend)                                                       \
    X(Bsend, bsend)

#define DJ_RECEIVES(X)                                                    \
    X(Recv) X(Recv_c) X(Irecv) X(Irecv_c) X(Recv_init) X(Recv_init_c)    \
    X(Mrecv) X(Mrecv_c) X(Imrecv) X(Imrecv_c)                             \
    X(Sendrecv) X(Sendrecv_c) X(Sendrecv_replace) X(Sendrecv_replace_c)  \
    X(Isendrecv) X(Isendrecv_c)                                           \
    X(Isendrecv_replace) X(Isendrecv_replace_c)

#define DJ_SIX(ONE, N, n)                                                 \
    ONE(N) ONE(N##_c) ONE(I##n) ONE(I##n##_c) ONE(N##_init)               \
    ONE(N##_init_c)

#define DJ_ENUM_ONE(name) DJ_OP_##name,
#define DJ_ENUM_SIX(N, n) DJ_SIX(DJ_ENUM_ONE, N, n)
#define DJ_NAME_ONE(name) "MPI_" #name,
#define DJ_NAME_SIX(N, n) DJ_SIX(DJ_NAME_ONE, N, n)

enum dj_op {
    DJ_COLLECTIVES(DJ_ENUM_SIX)
    DJ_SENDS(DJ_ENUM_SIX)
    DJ_RECEIVES(DJ_ENUM_ONE)
    DJ_OP_COUNT
};

static const char *const dj_op_names[DJ_OP_COUNT] = {
    DJ_COLLECTIVES(DJ_NAME_SIX)
    DJ_SENDS(DJ_NAME_SIX)
    DJ_RECEIVES(DJ_NAME_ONE)
};

struct dj_slot {
    dj_u64 calls;
    dj_u64 sent;
    dj_u64 received;
    dj_u64 uncounted;
};

static struct dj_slot dj_slots[DJ_OP_COUNT];

/* What one call moved; uncounted means its bytes were not attributed. */
struct dj_bytes {
    MPI_Count sent;
    MPI_Count received;
    int uncounted;
};

static void dj_add(dj_u64 *counter, MPI_Count value)
{
    if (value > 0)
        __atomic_fetch_add(counter, (dj_u64)value, __ATOMIC_RELAXED);
}

static void dj_record(enum dj_op op, struct dj_bytes bytes)
{
    struct dj_slot *slot = &dj_slots[op];

    dj_add(&slot->calls, 1);
    dj_add(&slot->sent, bytes.sent);
    dj_add(&slot->received, bytes.received);
    if (bytes.uncounted)
        dj_add(&slot->uncounted, 1);
}

/* ---------------------------------------------------------------------
 * Communicators, datatypes and count arrays.
 */

struct dj_comm {
    int rank;
    int size;
    int inter;
};

static struct dj_comm dj_comm_of(MPI_Comm comm)
{
    struct dj_comm info = {0, 1, 0};

    PMPI_Comm_test_inter(comm, &info.inter);
    PMPI_Comm_rank(comm, &info.rank);
    PMPI_Comm_size(comm, &info.size);
    return info;
}

/* Bytes in count items of type; the type is only looked at if count > 0,
 * so an insignificant MPI_DATATYPE_NULL argument is never queried. */
static MPI_Count dj_type_bytes(MPI_Count count, MPI_Datatype type)
{
    MPI_Count size = 0;

    if (count <= 0)
        return 0;
    if (PMPI_Type_size_c(type, &size) != MPI_SUCCESS
        || size == MPI_UNDEFINED)
        return 0;
    return count * size;
}

/* A count array of either width: int (classic) or MPI_Count (the _c
 * large-count entry points). */
struct dj_counts {
    const int *narrow;
    const MPI_Count *wide;
};

#define DJ_NARROW(p) ((struct dj_counts){(p), NULL})
#define DJ_WIDE(p) ((struct dj_counts){NULL, (p)})

static MPI_Count dj_count_at(struct dj_counts counts, int i)
{
    return counts.wide != NULL ? counts.wide[i] : counts.narrow[i];
}

/* Sum of counts[i] over every i but skip. */
static MPI_Count dj_sum_others(struct dj_counts counts, int n, int skip)
{
    MPI_Count total = 0;

    for (int i = 0; i < n; i++)
        if (i != skip)
            total += dj_count_at(counts, i);
    return total;
}

/* Does a message to or from peer cross to another process? */
static int dj_peer_is_other(MPI_Comm comm, int peer)
{
    struct dj_comm info;

    if (peer == MPI_PROC_NULL)
        return 0;
    info = dj_comm_of(comm);
    /* On an intercommunicator every peer is in the other group; an
     * MPI_ANY_SOURCE receive is counted as if from another rank. */
    if (info.inter || peer == MPI_ANY_SOURCE)
        return 1;
    return peer != info.rank;
}

static const struct dj_bytes dj_uncounted = {0, 0, 1};

/* ---------------------------------------------------------------------
 * Byte rules of the collectives (intracommunicators).
 */

static struct dj_bytes dj_bcast(MPI_Comm comm, MPI_Count count,
                                MPI_Datatype type, int root)
{
    struct dj_comm c = dj_comm_of(comm);
    struct dj_bytes b = {0, 0, 0};
    MPI_Count nbytes;

    if (c.inter)
        return dj_uncounted;
    nbytes = dj_type_bytes(count, type);
    if (c.rank == root)
        b.sent = nbytes * (c.size - 1);
    else
        b.received = nbytes;
    return b;
}

static struct dj_bytes dj_gather(MPI_Comm comm, MPI_Count sendcount,
                                 MPI_Datatype sendtype,
                                 MPI_Count recvcount,
                                 MPI_Datatype recvtype, int root)
{
    struct dj_comm c = dj_comm_of(comm);
    struct dj_bytes b = {0, 0, 0};

    if (c.inter)
        return dj_uncounted;
    if (c.rank == root)
        b.received = dj_type_bytes(recvcount, recvtype) * (c.size - 1);
    else
        b.sent = dj_type_bytes(sendcount, sendtype);
    return b;
}

static struct dj_bytes dj_gatherv(MPI_Comm comm, MPI_Count sendcount,
                                  MPI_Datatype sendtype,
                                  struct dj_counts recvcounts,
                                  MPI_Datatype recvtype, int root)
{
    struct dj_comm c = dj_comm_of(comm);
    struct dj_bytes b = {0, 0, 0};

    if (c.inter)
        return dj_uncounted;
    if (c.rank == root)
        b.received = dj_type_bytes(
            dj_sum_others(recvcounts, c.size, root), recvtype);
    else
        b.sent = dj_type_bytes(sendcount, sendtype);
    return b;
}

static struct dj_bytes dj_scatter(MPI_Comm comm, MPI_Count sendcount,
                                  MPI_Datatype sendtype,
                                  MPI_Count recvcount,
                                  MPI_Datatype recvtype, int root)
{
    struct dj_comm c = dj_comm_of(comm);
    struct dj_bytes b = {0, 0, 0};

    if (c.inter)
        return dj_uncounted;
    if (c.rank == root)
        b.sent = dj_type_bytes(sendcount, sendtype) * (c.size - 1);
    else
        b.received = dj_type_bytes(recvcount, recvtype);
    return b;
}

static struct dj_bytes dj_scatterv(MPI_Comm comm,
                                   struct dj_counts sendcounts,
                                   MPI_Datatype sendtype,
                                   MPI_Count recvcount,
                                   MPI_Datatype recvtype, int root)
{
    struct dj_comm c = dj_comm_of(comm);
    struct dj_bytes b = {0, 0, 0};

    if (c.inter)
        return dj_uncounted;
    if (c.rank == root)
        b.sent = dj_type_bytes(dj_sum_others(sendcounts, c.size, root),
                               sendtype);
    else
        b.received = dj_type_bytes(recvcount, recvtype);
    return b;
}

static struct dj_bytes dj_allgather(MPI_Comm comm, const void *sendbuf,
                                    MPI_Count sendcount,
                                    MPI_Datatype sendtype,
                                    MPI_Count recvcount,
                                    MPI_Datatype recvtype)
{
    struct dj_comm c = dj_comm_of(comm);
    struct dj_bytes b = {0, 0, 0};
    MPI_Count block = dj_type_bytes(recvcount, recvtype);

    if (c.inter)
        return dj_uncounted;
    /* In place, this rank's block is already in recvbuf. */
    if (sendbuf == MPI_IN_PLACE)
        b.sent = block * (c.size - 1);
    else
        b.sent = dj_type_bytes(sendcount, sendtype) * (c.size - 1);
    b.received = block * (c.size - 1);
    return b;
}

static struct dj_bytes dj_allgatherv(MPI_Comm comm, const void *sendbuf,
                                     MPI_Count sendcount,
                                     MPI_Datatype sendtype,
                                     struct dj_counts recvcounts,
                                     MPI_Datatype recvtype)
{
    struct dj_comm c = dj_comm_of(comm);
    struct dj_bytes b = {0, 0, 0};
    MPI_Count own;

    if (c.inter)
        return dj_uncounted;
    if (sendbuf == MPI_IN_PLACE)
        own = dj_type_bytes(dj_count_at(recvcounts, c.rank), recvtype);
    else
        own = dj_type_bytes(sendcount, sendtype);
    b.sent = own * (c.size - 1);
    b.received = dj_type_bytes(dj_sum_others(recvcounts, c.size, c.rank),
                               recvtype);
    return b;
}

static struct dj_bytes dj_alltoall(MPI_Comm comm, const void *sendbuf,
                                   MPI_Count sendcount,
                                   MPI_Datatype sendtype,
                                   MPI_Count recvcount,
                                   MPI_Datatype recvtype)
{
    struct dj_comm c = dj_comm_of(comm);
    struct dj_bytes b = {0, 0, 0};
    MPI_Count block = dj_type_bytes(recvcount, recvtype);

    if (c.inter)
        return dj_uncounted;
    if (sendbuf == MPI_IN_PLACE)
        b.sent = block * (c.size - 1);
    else
        b.sent = dj_type_bytes(sendcount, sendtype) * (c.size - 1);
    b.received = block * (c.size - 1);
    return b;
}

static struct dj_bytes dj_alltoallv(MPI_Comm comm, const void *sendbuf,
                                    struct dj_counts sendcounts,
                                    MPI_Datatype sendtype,
                                    struct dj_counts recvcounts,
                                    MPI_Datatype recvtype)
{
    struct dj_comm c = dj_comm_of(comm);
    struct dj_bytes b = {0, 0, 0};
    MPI_Count in = dj_sum_others(recvcounts, c.size, c.rank);

    if (c.inter)
        return dj_uncounted;
    if (sendbuf == MPI_IN_PLACE)
        b.sent = dj_type_bytes(in, recvtype);
    else
        b.sent = dj_type_bytes(dj_sum_others(sendcounts, c.size, c.rank),
                               sendtype);
    b.received = dj_type_bytes(in, recvtype);
    return b;
}

static struct dj_bytes dj_alltoallw(MPI_Comm comm, const void *sendbuf,
                                    struct dj_counts sendcounts,
                                    const MPI_Datatype sendtypes[],
                                    struct dj_counts recvcounts,
                                    const MPI_Datatype recvtypes[])
{
    struct dj_comm c = dj_comm_of(comm);
    struct dj_bytes b = {0, 0, 0};

    if (c.inter)
        return dj_uncounted;
    for (int i = 0; i < c.size; i++) {
        MPI_Count in;

        if (i == c.rank)
            continue;
        in = dj_type_bytes(dj_count_at(recvcounts, i), recvtypes[i]);
        b.received += in;
        if (sendbuf == MPI_IN_PLACE)
            b.sent += in;
        else
            b.sent += dj_type_bytes(dj_count_at(sendcounts, i),
                                    sendtypes[i]);
    }
    return b;
}

static struct dj_bytes dj_reduce(MPI_Comm comm, MPI_Count count,
                                 MPI_Datatype type, int root)
{
    struct dj_comm c = dj_comm_of(comm);
    struct dj_bytes b = {0, 0, 0};
    MPI_Count nbytes;

    if (c.inter)
        return dj_uncounted;
    nbytes = dj_type_bytes(count, type);
    if (c.rank == root)
        b.received = nbytes * (c.size - 1);
    else
        b.sent = nbytes;
    return b;
}

static struct dj_bytes dj_allreduce(MPI_Comm comm, MPI_Count count,
                                    MPI_Datatype type)
{
    struct dj_comm c = dj_comm_of(comm);
    struct dj_bytes b = {0, 0, 0};
    MPI_Count nbytes;

    if (c.inter)
        return dj_uncounted;
    nbytes = dj_type_bytes(count, type) * (c.size - 1);
    b.sent = nbytes;
    b.received = nbytes;
    return b;
}

/* Rank i gets block i of the reduction: this rank sends every other
 * rank its block and receives its own block from each of them. */
static struct dj_bytes dj_reduce_scatter(MPI_Comm comm,
                                         struct dj_counts recvcounts,
                                         MPI_Datatype type)
{
    struct dj_comm c = dj_comm_of(comm);
    struct dj_bytes b = {0, 0, 0};

    if (c.inter)
        return dj_uncounted;
    b.sent = dj_type_bytes(dj_sum_others(recvcounts, c.size, c.rank),
                           type);
    b.received = dj_type_bytes(dj_count_at(recvcounts, c.rank), type)
                 * (c.size - 1);
    return b;
}

static struct dj_bytes dj_reduce_scatter_block(MPI_Comm comm,
                                               MPI_Count recvcount,
                                               MPI_Datatype type)
{
    return dj_allreduce(comm, recvcount, type);
}

/* Rank r combines the buffers of ranks 0..r-1 (scan) or of ranks below
 * it (exscan): it receives from r ranks and sends to size - 1 - r. */
static struct dj_bytes dj_scan(MPI_Comm comm, MPI_Count count,
                               MPI_Datatype type)
{
    struct dj_comm c = dj_comm_of(comm);
    struct dj_bytes b = {0, 0, 0};
    MPI_Count nbytes;

    if (c.inter)
        return dj_uncounted;
    nbytes = dj_type_bytes(count, type);
    b.sent = nbytes * (c.size - 1 - c.rank);
    b.received = nbytes * c.rank;
    return b;
}

/* ---------------------------------------------------------------------
 * Persistent requests: their bytes are counted at every start.
 */

struct dj_persistent {
    MPI_Request request;
    enum dj_op op;
    struct dj_bytes bytes;
};

static pthread_mutex_t dj_lock = PTHREAD_MUTEX_INITIALIZER;
static struct dj_persistent *dj_requests;
static size_t dj_nrequests;
static size_t dj_request_room;

static void dj_persist(MPI_Request request, enum dj_op op,
                       struct dj_bytes bytes)
{
    pthread_mutex_lock(&dj_lock);
    if (dj_nrequests == dj_request_room) {
        size_t room = dj_request_room ? 2 * dj_request_room : 16;
        struct dj_persistent *grown =
            realloc(dj_requests, room * sizeof *grown);

        if (grown == NULL) {
            /* Out of memory: this request's starts go uncounted. */
            pthread_mutex_unlock(&dj_lock);
            dj_record(op, dj_uncounted);
            return;
        }
        dj_requests = grown;
        dj_request_room = room;
    }
    dj_requests[dj_nrequests].request = request;
    dj_requests[dj_nrequests].op = op;
    dj_requests[dj_nrequests].bytes = bytes;
    dj_nrequests++;
    pthread_mutex_unlock(&dj_lock);
}

static void dj_started(MPI_Request request)
{
    struct dj_persistent found = {0};
    int hit = 0;

    pthread_mutex_lock(&dj_lock);
    for (size_t i = 0; i < dj_nrequests; i++)
        if (dj_requests[i].request == request) {
            found = dj_requests[i];
            hit = 1;
            break;
        }
    pthread_mutex_unlock(&dj_lock);
    if (hit)
        dj_record(found.op, found.bytes);
}

static void dj_forget(MPI_Request request)
{
    pthread_mutex_lock(&dj_lock);
    for (size_t i = 0; i < dj_nrequests; i++)
        if (dj_requests[i].request == request) {
            dj_requests[i] = dj_requests[--dj_nrequests];
            break;
        }
    pthread_mutex_unlock(&dj_lock);
}

int MPI_Start(MPI_Request *request)
{
    MPI_Request handle = *request;
    int err = PMPI_Start(request);

    if (err == MPI_SUCCESS)
        dj_started(handle);
    return err;
}

int MPI_Startall(int count, MPI_Request array_of_requests[])
{
    int err = PMPI_Startall(count, array_of_requests);

    if (err == MPI_SUCCESS)
        for (int i = 0; i < count; i++)
            dj_started(array_of_requests[i]);
    return err;
}

int MPI_Request_free(MPI_Request *request)
{
    MPI_Request handle = *request;
    int err = PMPI_Request_free(request);

    if (err == MPI_SUCCESS)
        dj_forget(handle);
    return err;
}

/* ---------------------------------------------------------------------
 * Matched probes: remember whether a probed message came from this
 * rank, so that MPI_Imrecv (which names no source) can tell.
 */

struct dj_probed {
    MPI_Message message;
    int other;
};

static struct dj_probed *dj_messages;
static size_t dj_nmessages;
static size_t dj_message_room;

static void dj_probed(MPI_Comm comm, MPI_Message message,
                      const MPI_Status *status)
{
    int other;

    if (message == MPI_MESSAGE_NULL || message == MPI_MESSAGE_NO_PROC)
        return;
    other = dj_peer_is_other(comm, status->MPI_SOURCE);
    pthread_mutex_lock(&dj_lock);
    if (dj_nmessages == dj_message_room) {
        size_t room = dj_message_room ? 2 * dj_message_room : 16;
        struct dj_probed *grown =
            realloc(dj_messages, room * sizeof *grown);

        if (grown == NULL) {
            /* Unknown messages are counted as from another rank. */
            pthread_mutex_unlock(&dj_lock);
            return;
        }
        dj_messages = grown;
        dj_message_room = room;
    }
    dj_messages[dj_nmessages].message = message;
    dj_messages[dj_nmessages].other = other;
    dj_nmessages++;
    pthread_mutex_unlock(&dj_lock);
}

/* Whether message came from another rank; forgets it. */
static int dj_message_is_other(MPI_Message message)
{
    int other = 1;

    pthread_mutex_lock(&dj_lock);
    for (size_t i = 0; i < dj_nmessages; i++)
        if (dj_messages[i].message == message) {
            other = dj_messages[i].other;
            dj_messages[i] = dj_messages[--dj_nmessages];
            break;
        }
    pthread_mutex_unlock(&dj_lock);
    return other;
}

int MPI_Mprobe(int source, int tag, MPI_Comm comm, MPI_Message *message,
               MPI_Status *status)
{
    MPI_Status own;
    MPI_Status *use = status == MPI_STATUS_IGNORE ? &own : status;
    int err = PMPI_Mprobe(source, tag, comm, message, use);

    if (err == MPI_SUCCESS)
        dj_probed(comm, *message, use);
    return err;
}

int MPI_Improbe(int source, int tag, MPI_Comm comm, int *flag,
                MPI_Message *message, MPI_Status *status)
{
    MPI_Status own;
    MPI_Status *use = status == MPI_STATUS_IGNORE ? &own : status;
    int err = PMPI_Improbe(source, tag, comm, flag, message, use);

    if (err == MPI_SUCCESS && *flag)
        dj_probed(comm, *message, use);
    return err;
}

/* ---------------------------------------------------------------------
 * Receives that completed: the status says who sent and how much.
 */

static MPI_Count dj_status_bytes(const MPI_Status *status,
                                 MPI_Datatype type)
{
    MPI_Count count = 0;
    MPI_Count size = 0;

    if (PMPI_Get_count_c(status, type, &count) == MPI_SUCCESS
        && count != MPI_UNDEFINED
        && PMPI_Type_size_c(type, &size) == MPI_SUCCESS
        && size != MPI_UNDEFINED)
        return count * size;
    /* A partial item: fall back to the raw byte count. */
    if (PMPI_Get_count_c(status, MPI_BYTE, &count) == MPI_SUCCESS
        && count != MPI_UNDEFINED)
        return count;
    return 0;
}

static MPI_Count dj_arrived(MPI_Comm comm, const MPI_Status *status,
                            MPI_Datatype type)
{
    if (!dj_peer_is_other(comm, status->MPI_SOURCE))
        return 0;
    return dj_status_bytes(status, type);
}

/* ---------------------------------------------------------------------
 * Wrappers of the collectives.
 *
 * For each family: P(CT, DT) is the parameter list with count type CT
 * and displacement type DT, A() the argument names, B(W) the byte rule
 * with W wrapping count arrays.  DJ_WRAP writes the blocking, the
 * nonblocking and the persistent entry point of one width.
 */

#define DJ_WRAP(N, n, SUF, CT, DT, W, P, A, B)                           \
    int MPI_##N##SUF(P(CT, DT))                                          \
    {                                                                     \
        int err = PMPI_##N##SUF(A());                                     \
        if (err == MPI_SUCCESS)                                           \
            dj_record(DJ_OP_##N##SUF, B(W));                              \
        return err;                                                       \
    }                                                                     \
    int MPI_I##n##SUF(P(CT, DT), MPI_Request *request)                   \
    {                                                                     \
        int err = PMPI_I##n##SUF(A(), request);                           \
        if (err == MPI_SUCCESS)                                           \
            dj_record(DJ_OP_I##n##SUF, B(W));                             \
        return err;                                                       \
    }                                                                     \
    int MPI_##N##_init##SUF(P(CT, DT), MPI_Info info,                    \
                            MPI_Request *request)                         \
    {                                                                     \
        int err = PMPI_##N##_init##SUF(A(), info, request);              \
        if (err == MPI_SUCCESS)                                           \
            dj_persist(*request, DJ_OP_##N##_init##SUF, B(W));           \
        return err;                                                       \
    }

#define DJ_FAMILY(N, n, P, A, B)                                          \
    DJ_WRAP(N, n, , int, int, DJ_NARROW, P, A, B)                         \
    DJ_WRAP(N, n, _c, MPI_Count, MPI_Aint, DJ_WIDE, P, A, B)

/* Bcast */
#define DJ_P_BCAST(CT, DT)                                                \
    void *buffer, CT count, MPI_Datatype datatype, int root, MPI_Comm comm
#define DJ_A_BCAST() buffer, count, datatype, root, comm
#define DJ_B_BCAST(W) dj_bcast(comm, count, datatype, root)
DJ_FAMILY(Bcast, bcast, DJ_P_BCAST, DJ_A_BCAST, DJ_B_BCAST)

/* Gather and Scatter share one parameter list. */
#define DJ_P_ROOTED(CT, DT)                                               \
    const void *sendbuf, CT sendcount, MPI_Datatype sendtype,            \
        void *recvbuf, CT recvcount, MPI_Datatype recvtype, int root,    \
        MPI_Comm comm
#define DJ_A_ROOTED()                                                     \
    sendbuf, sendcount, sendtype, recvbuf, recvcount, recvtype, root, comm
#define DJ_B_GATHER(W)                                                    \
    dj_gather(comm, sendcount, sendtype, recvcount, recvtype, root)
#define DJ_B_SCATTER(W)                                                   \
    dj_scatter(comm, sendcount, sendtype, recvcount, recvtype, root)
DJ_FAMILY(Gather, gather, DJ_P_ROOTED, DJ_A_ROOTED, DJ_B_GATHER)
DJ_FAMILY(Scatter, scatter, DJ_P_ROOTED, DJ_A_ROOTED, DJ_B_SCATTER)

/* Gatherv */
#define DJ_P_GATHERV(CT, DT)                                              \
    const void *sendbuf, CT sendcount, MPI_Datatype sendtype,            \
        void *recvbuf, const CT recvcounts[], const DT displs[],         \
        MPI_Datatype recvtype, int root, MPI_Comm comm
#define DJ_A_GATHERV()                                                    \
    sendbuf, sendcount, sendtype, recvbuf, recvcounts, displs, recvtype, \
        root, comm
#define DJ_B_GATHERV(W)                                                   \
    dj_gatherv(comm, sendcount, sendtype, W(recvcounts), recvtype, root)
DJ_FAMILY(Gatherv, gatherv, DJ_P_GATHERV, DJ_A_GATHERV, DJ_B_GATHERV)

/* Scatterv */
#define DJ_P_SCATTERV(CT, DT)                                             \
    const void *sendbuf, const CT sendcounts[], const DT displs[],       \
        MPI_Datatype sendtype, void *recvbuf, CT recvcount,              \
        MPI_Datatype recvtype, int root, MPI_Comm comm
#define DJ_A_SCATTERV()                                                   \
    sendbuf, sendcounts, displs, sendtype, recvbuf, recvcount, recvtype, \
        root, comm
#define DJ_B_SCATTERV(W)                                                  \
    dj_scatterv(comm, W(sendcounts), sendtype, recvcount, recvtype, root)
DJ_FAMILY(Scatterv, scatterv, DJ_P_SCATTERV, DJ_A_SCATTERV,
          DJ_B_SCATTERV)

/* Allgather and Alltoall share one parameter list. */
#define DJ_P_ALL(CT, DT)                                                  \
    const void *sendbuf, CT sendcount, MPI_Datatype sendtype,            \
        void *recvbuf, CT recvcount, MPI_Datatype recvtype, MPI_Comm comm
#define DJ_A_ALL()                                                        \
    sendbuf, sendcount, sendtype, recvbuf, recvcount, recvtype, comm
#define DJ_B_ALLGATHER(W)                                                 \
    dj_allgather(comm, sendbuf, sendcount, sendtype, recvcount, recvtype)
#define DJ_B_ALLTOALL(W)                                                  \
    dj_alltoall(comm, sendbuf, sendcount, sendtype, recvcount, recvtype)
DJ_FAMILY(Allgather, allgather, DJ_P_ALL, DJ_A_ALL, DJ_B_ALLGATHER)
DJ_FAMILY(Alltoall, alltoall, DJ_P_ALL, DJ_A_ALL, DJ_B_ALLTOALL)

/* Allgatherv */
#define DJ_P_ALLGATHERV(CT, DT)                                           \
    const void *sendbuf, CT sendcount, MPI_Datatype sendtype,            \
        void *recvbuf, const CT recvcounts[], const DT displs[],         \
        MPI_Datatype recvtype, MPI_Comm comm
#define DJ_A_ALLGATHERV()                                                 \
    sendbuf, sendcount, sendtype, recvbuf, recvcounts, displs, recvtype, \
        comm
#define DJ_B_ALLGATHERV(W)                                                \
    dj_allgatherv(comm, sendbuf, sendcount, sendtype, W(recvcounts),     \
                  recvtype)
DJ_FAMILY(Allgatherv, allgatherv, DJ_P_ALLGATHERV, DJ_A_ALLGATHERV,
          DJ_B_ALLGATHERV)

/* Alltoallv */
#define DJ_P_ALLTOALLV(CT, DT)                                            \
    const void *sendbuf, const CT sendcounts[], const DT sdispls[],      \
        MPI_Datatype sendtype, void *recvbuf, const CT recvcounts[],     \
        const DT rdispls[], MPI_Datatype recvtype, MPI_Comm comm
#define DJ_A_ALLTOALLV()                                                  \
    sendbuf, sendcounts, sdispls, sendtype, recvbuf, recvcounts,         \
        rdispls, recvtype, comm
#define DJ_B_ALLTOALLV(W)                                                 \
    dj_alltoallv(comm, sendbuf, W(sendcounts), sendtype, W(recvcounts),  \
                 recvtype)
DJ_FAMILY(Alltoallv, alltoallv, DJ_P_ALLTOALLV, DJ_A_ALLTOALLV,
          DJ_B_ALLTOALLV)

/* Alltoallw */
#define DJ_P_ALLTOALLW(CT, DT)                                            \
    const void *sendbuf, const CT sendcounts[], const DT sdispls[],      \
        const MPI_Datatype sendtypes[], void *recvbuf,                   \
        const CT recvcounts[], const DT rdispls[],                       \
        const MPI_Datatype recvtypes[], MPI_Comm comm
#define DJ_A_ALLTOALLW()                                                  \
    sendbuf, sendcounts, sdispls, sendtypes, recvbuf, recvcounts,        \
        rdispls, recvtypes, comm
#define DJ_B_ALLTOALLW(W)                                                 \
    dj_alltoallw(comm, sendbuf, W(sendcounts), sendtypes, W(recvcounts), \
                 recvtypes)
DJ_FAMILY(Alltoallw, alltoallw, DJ_P_ALLTOALLW, DJ_A_ALLTOALLW,
          DJ_B_ALLTOALLW)

/* Reduce */
#define DJ_P_REDUCE(CT, DT)                                               \
    const void *sendbuf, void *recvbuf, CT count, MPI_Datatype datatype, \
        MPI_Op op, int root, MPI_Comm comm
#define DJ_A_REDUCE() sendbuf, recvbuf, count, datatype, op, root, comm
#define DJ_B_REDUCE(W) dj_reduce(comm, count, datatype, root)
DJ_FAMILY(Reduce, reduce, DJ_P_REDUCE, DJ_A_REDUCE, DJ_B_REDUCE)

/* Allreduce, Scan and Exscan share one parameter list. */
#define DJ_P_COMBINE(CT, DT)                                              \
    const void *sendbuf, void *recvbuf, CT count, MPI_Datatype datatype, \
        MPI_Op op, MPI_Comm comm
#define DJ_A_COMBINE() sendbuf, recvbuf, count, datatype, op, comm
#define DJ_B_ALLREDUCE(W) dj_allreduce(comm, count, datatype)
#define DJ_B_SCAN(W) dj_scan(comm, count, datatype)
DJ_FAMILY(Allreduce, allreduce, DJ_P_COMBINE, DJ_A_COMBINE,
          DJ_B_ALLREDUCE)
DJ_FAMILY(Scan, scan, DJ_P_COMBINE, DJ_A_COMBINE, DJ_B_SCAN)
DJ_FAMILY(Exscan, exscan, DJ_P_COMBINE, DJ_A_COMBINE, DJ_B_SCAN)

/* Reduce_scatter */
#define DJ_P_REDUCE_SCATTER(CT, DT)                                       \
    const void *sendbuf, void *recvbuf, const CT recvcounts[],           \
        MPI_Datatype datatype, MPI_Op op, MPI_Comm comm
#define DJ_A_REDUCE_SCATTER()                                             \
    sendbuf, recvbuf, recvcounts, datatype, op, comm
#define DJ_B_REDUCE_SCATTER(W)                                            \
    dj_reduce_scatter(comm, W(recvcounts), datatype)
DJ_FAMILY(Reduce_scatter, reduce_scatter, DJ_P_REDUCE_SCATTER,
          DJ_A_REDUCE_SCATTER, DJ_B_REDUCE_SCATTER)

/* Reduce_scatter_block */
#define DJ_P_REDUCE_SCATTER_BLOCK(CT, DT)                                 \
    const void *sendbuf, void *recvbuf, CT recvcount,                    \
        MPI_Datatype datatype, MPI_Op op, MPI_Comm comm
#define DJ_A_REDUCE_SCATTER_BLOCK()                                       \
    sendbuf, recvbuf, recvcount, datatype, op, comm
#define DJ_B_REDUCE_SCATTER_BLOCK(W)                                      \
    dj_reduce_scatter_block(comm, recvcount, datatype)
DJ_FAMILY(Reduce_scatter_block, reduce_scatter_block,
          DJ_P_REDUCE_SCATTER_BLOCK, DJ_A_REDUCE_SCATTER_BLOCK,
          DJ_B_REDUCE_SCATTER_BLOCK)

/* ---------------------------------------------------------------------
 * Wrappers of the point-to-point calls.
 */

static struct dj_bytes dj_send(MPI_Comm comm, MPI_Count count,
                               MPI_Datatype type, int dest)
{
    struct dj_bytes b = {0, 0, 0};

    if (dj_peer_is_other(comm, dest))
        b.sent = dj_type_bytes(count, type);
    return b;
}

/* Send, Ssend, Rsend, Bsend: blocking, nonblocking and persistent. */
#define DJ_WRAP_SEND(N, n, SUF, CT)                                       \
    int MPI_##N##SUF(const void *buf, CT count, MPI_Datatype datatype,   \
                     int dest, int tag, MPI_Comm comm)                    \
    {                                                                     \
        int err = PMPI_##N##SUF(buf, count, datatype, dest, tag, comm);  \
        if (err == MPI_SUCCESS)                                           \
            dj_record(DJ_OP_##N##SUF,                                     \
                      dj_send(comm, count, datatype, dest));              \
        return err;                                                       \
    }                                                                     \
    int MPI_I##n##SUF(const void *buf, CT count, MPI_Datatype datatype,  \
                      int dest, int tag, MPI_Comm comm,                   \
                      MPI_Request *request)                               \
    {                                                                     \
        int err = PMPI_I##n##SUF(buf, count, datatype, dest, tag, comm,  \
                                 request);                                \
        if (err == MPI_SUCCESS)                                           \
            dj_record(DJ_OP_I##n##SUF,                                    \
                      dj_send(comm, count, datatype, dest));              \
        return err;                                                       \
    }                                                                     \
    int MPI_##N##_init##SUF(const void *buf, CT count,                   \
                            MPI_Datatype datatype, int dest, int tag,     \
                            MPI_Comm comm, MPI_Request *request)          \
    {                                                                     \
        int err = PMPI_##N##_init##SUF(buf, count, datatype, dest, tag,  \
                                       comm, request);                    \
        if (err == MPI_SUCCESS)                                           \
            dj_persist(*request, DJ_OP_##N##_init##SUF,                  \
                       dj_send(comm, count, datatype, dest));             \
        return err;                                                       \
    }

#define DJ_SEND_FAMILY(N, n)                                              \
    DJ_WRAP_SEND(N, n, , int)                                             \
    DJ_WRAP_SEND(N, n, _c, MPI_Count)

DJ_SENDS(DJ_SEND_FAMILY)

/* Recv, Irecv, Recv_init, Mrecv, Imrecv. */
#define DJ_WRAP_RECV(SUF, CT)                                             \
    int MPI_Recv##SUF(void *buf, CT count, MPI_Datatype datatype,        \
                      int source, int tag, MPI_Comm comm,                 \
                      MPI_Status *status)                                 \
    {                                                                     \
        MPI_Status own;                                                   \
        MPI_Status *use = status == MPI_STATUS_IGNORE ? &own : status;   \
        int err = PMPI_Recv##SUF(buf, count, datatype, source, tag, comm,\
                                 use);                                    \
        if (err == MPI_SUCCESS) {                                         \
            struct dj_bytes b = {0, dj_arrived(comm, use, datatype), 0}; \
            dj_record(DJ_OP_Recv##SUF, b);                                \
        }                                                                 \
        return err;                                                       \
    }                                                                     \
    int MPI_Irecv##SUF(void *buf, CT count, MPI_Datatype datatype,       \
                       int source, int tag, MPI_Comm comm,                \
                       MPI_Request *request)                              \
    {                                                                     \
        int err = PMPI_Irecv##SUF(buf, count, datatype, source, tag,     \
                                  comm, request);                         \
        if (err == MPI_SUCCESS) {                                         \
            struct dj_bytes b = {0, 0, 0};                                \
            if (dj_peer_is_other(comm, source))                           \
                b.received = dj_type_bytes(count, datatype);              \
            dj_record(DJ_OP_Irecv##SUF, b);                               \
        }                                                                 \
        return err;                                                       \
    }                                                                     \
    int MPI_Recv_init##SUF(void *buf, CT count, MPI_Datatype datatype,   \
                           int source, int tag, MPI_Comm comm,            \
                           MPI_Request *request)                          \
    {                                                                     \
        int err = PMPI_Recv_init##SUF(buf, count, datatype, source, tag, \
                                      comm, request);                     \
        if (err == MPI_SUCCESS) {                                         \
            struct dj_bytes b = {0, 0, 0};                                \
            if (dj_peer_is_other(comm, source))                           \
                b.received = dj_type_bytes(count, datatype);              \
            dj_persist(*request, DJ_OP_Recv_init##SUF, b);                \
        }                                                                 \
        return err;                                                       \
    }                                                                     \
    int MPI_Mrecv##SUF(void *buf, CT count, MPI_Datatype datatype,       \
                       MPI_Message *message, MPI_Status *status)          \
    {                                                                     \
        MPI_Status own;                                                   \
        MPI_Status *use = status == MPI_STATUS_IGNORE ? &own : status;   \
        MPI_Message handle = *message;                                    \
        int err = PMPI_Mrecv##SUF(buf, count, datatype, message, use);   \
        if (err == MPI_SUCCESS) {                                         \
            struct dj_bytes b = {0, 0, 0};                                \
            /* Mrecv names no communicator: the probe said who sent. */   \
            if (handle != MPI_MESSAGE_NO_PROC                             \
                && dj_message_is_other(handle))                           \
                b.received = dj_status_bytes(use, datatype);              \
            dj_record(DJ_OP_Mrecv##SUF, b);                               \
        }                                                                 \
        return err;                                                       \
    }                                                                     \
    int MPI_Imrecv##SUF(void *buf, CT count, MPI_Datatype datatype,      \
                        MPI_Message *message, MPI_Request *request)       \
    {                                                                     \
        MPI_Message handle = *message;                                    \
        int err = PMPI_Imrecv##SUF(buf, count, datatype, message,        \
                                   request);                              \
        if (err == MPI_SUCCESS) {                                         \
            struct dj_bytes b = {0, 0, 0};                                \
            if (handle != MPI_MESSAGE_NO_PROC                             \
                && dj_message_is_other(handle))                           \
                b.received = dj_type_bytes(count, datatype);              \
            dj_record(DJ_OP_Imrecv##SUF, b);                              \
        }                                                                 \
        return err;                                                       \
    }

DJ_WRAP_RECV(, int)
DJ_WRAP_RECV(_c, MPI_Count)

/* Sendrecv, Sendrecv_replace and their nonblocking forms. */
#define DJ_WRAP_SENDRECV(SUF, CT)                                         \
    int MPI_Sendrecv##SUF(const void *sendbuf, CT sendcount,             \
                          MPI_Datatype sendtype, int dest, int sendtag,  \
                          void *recvbuf, CT recvcount,                    \
                          MPI_Datatype recvtype, int source, int recvtag,\
                          MPI_Comm comm, MPI_Status *status)              \
    {                                                                     \
        MPI_Status own;                                                   \
        MPI_Status *use = status == MPI_STATUS_IGNORE ? &own : status;   \
        int err = PMPI_Sendrecv##SUF(sendbuf, sendcount, sendtype, dest, \
                                     sendtag, recvbuf, recvcount,         \
                                     recvtype, source, recvtag, comm,     \
                                     use);                                \
        if (err == MPI_SUCCESS) {                                         \
            struct dj_bytes b = dj_send(comm, sendcount, sendtype, dest);\
            b.received = dj_arrived(comm, use, recvtype);                 \
            dj_record(DJ_OP_Sendrecv##SUF, b);                            \
        }                                                                 \
        return err;                                                       \
    }                                                                     \
    int MPI_Sendrecv_replace##SUF(void *buf, CT count,                   \
                                  MPI_Datatype datatype, int dest,        \
                                  int sendtag, int source, int recvtag,   \
                                  MPI_Comm comm, MPI_Status *status)      \
    {                                                                     \
        MPI_Status own;                                                   \
        MPI_Status *use = status == MPI_STATUS_IGNORE ? &own : status;   \
        int err = PMPI_Sendrecv_replace##SUF(buf, count, datatype, dest, \
                                             sendtag, source, recvtag,    \
                                             comm, use);                  \
        if (err == MPI_SUCCESS) {                                         \
            struct dj_bytes b = dj_send(comm, count, datatype, dest);    \
            b.received = dj_arrived(comm, use, datatype);                 \
            dj_record(DJ_OP_Sendrecv_replace##SUF, b);                    \
        }                                                                 \
        return err;                                                       \
    }                                                                     \
    int MPI_Isendrecv##SUF(const void *sendbuf, CT sendcount,            \
                           MPI_Datatype sendtype, int dest, int sendtag, \
                           void *recvbuf, CT recvcount,                   \
                           MPI_Datatype recvtype, int source,             \
                           int recvtag, MPI_Comm comm,                    \
                           MPI_Request *request)                          \
    {                                                                     \
        int err = PMPI_Isendrecv##SUF(sendbuf, sendcount, sendtype,      \
                                      dest, sendtag, recvbuf, recvcount,  \
                                      recvtype, source, recvtag, comm,    \
                                      request);                           \
        if (err == MPI_SUCCESS) {                                         \
            struct dj_bytes b = dj_send(comm, sendcount, sendtype, dest);\
            if (dj_peer_is_other(comm, source))                           \
                b.received = dj_type_bytes(recvcount, recvtype);          \
            dj_record(DJ_OP_Isendrecv##SUF, b);                           \
        }                                                                 \
        return err;                                                       \
    }                                                                     \
    int MPI_Isendrecv_replace##SUF(void *buf, CT count,                  \
                                   MPI_Datatype datatype, int dest,       \
                                   int sendtag, int source, int recvtag,  \
                                   MPI_Comm comm, MPI_Request *request)   \
    {                                                                     \
        int err = PMPI_Isendrecv_replace##SUF(buf, count, datatype, dest,\
                                              sendtag, source, recvtag,   \
                                              comm, request);             \
        if (err == MPI_SUCCESS) {                                         \
            struct dj_bytes b = dj_send(comm, count, datatype, dest);    \
            if (dj_peer_is_other(comm, source))                           \
                b.received = dj_type_bytes(count, datatype);              \
            dj_record(DJ_OP_Isendrecv_replace##SUF, b);                   \
        }                                                                 \
        return err;                                                       \
    }

DJ_WRAP_SENDRECV(, int)
DJ_WRAP_SENDRECV(_c, MPI_Count)

/* ---------------------------------------------------------------------
 * Readers, for ctypes.  Totals are sums over the slots.
 */

/* This library's own MPI_Allgather, whatever the process resolves. */
extern __typeof__(MPI_Allgather) dj_own_allgather
    __attribute__((alias("MPI_Allgather"), visibility("hidden")));

static dj_u64 dj_load(const dj_u64 *counter)
{
    return __atomic_load_n(counter, __ATOMIC_RELAXED);
}

int datajax_pmpi_reader_version(void)
{
    return DJ_READER_VERSION;
}

/* Where two loaded objects sit in the process's load order. */
struct dj_order {
    const void *own;
    const void *mpi;
    int own_at;
    int mpi_at;
    int index;
};

static int dj_visit(struct dl_phdr_info *info, size_t size, void *data)
{
    struct dj_order *order = data;
    const void *base = (const void *)info->dlpi_addr;

    (void)size;
    if (base == order->own)
        order->own_at = order->index;
    if (base == order->mpi)
        order->mpi_at = order->index;
    order->index++;
    return 0;
}

/* Whether the wrappers stand in front of MPI for the whole process:
 *   1  yes: the process's MPI_Allgather is this library's, and this
 *      library was loaded before the MPI library (preloaded), so no
 *      caller can have bound to MPI directly;
 *   0  no: MPI_Allgather resolves to another definition;
 *  -1  no: this library was loaded after the MPI library, so callers
 *      loaded before it may call MPI directly, uncounted. */
int datajax_pmpi_interposing(void)
{
    void *global = dlsym(RTLD_DEFAULT, "MPI_Allgather");
    Dl_info own, mpi;
    struct dj_order order = {NULL, NULL, -1, -1, 0};

    if (global == NULL || global != (void *)&dj_own_allgather)
        return 0;
    if (!dladdr((void *)&dj_own_allgather, &own)
        || !dladdr((void *)&PMPI_Allgather, &mpi))
        return 0;
    order.own = own.dli_fbase;
    order.mpi = mpi.dli_fbase;
    dl_iterate_phdr(dj_visit, &order);
    if (order.own_at < 0 || order.mpi_at < 0 || order.mpi_at < order.own_at)
        return -1;
    return 1;
}

int datajax_pmpi_op_count(void)
{
    return DJ_OP_COUNT;
}

const char *datajax_pmpi_op_name(int op)
{
    return op >= 0 && op < DJ_OP_COUNT ? dj_op_names[op] : NULL;
}

#define DJ_READER(field)                                                  \
    dj_u64 datajax_pmpi_op_##field(int op)                                \
    {                                                                     \
        return op >= 0 && op < DJ_OP_COUNT                                \
                   ? dj_load(&dj_slots[op].field) : 0;                    \
    }                                                                     \
    dj_u64 datajax_pmpi_##field(void)                                     \
    {                                                                     \
        dj_u64 total = 0;                                                 \
        for (int op = 0; op < DJ_OP_COUNT; op++)                          \
            total += dj_load(&dj_slots[op].field);                        \
        return total;                                                     \
    }

DJ_READER(calls)
DJ_READER(sent)
DJ_READER(received)
DJ_READER(uncounted)

dj_u64 datajax_pmpi_bytes_sent(void)
{
    return datajax_pmpi_sent();
}

dj_u64 datajax_pmpi_bytes_received(void)
{
    return datajax_pmpi_received();
}

void datajax_pmpi_reset(void)
{
    for (int op = 0; op < DJ_OP_COUNT; op++) {
        __atomic_store_n(&dj_slots[op].calls, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&dj_slots[op].sent, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&dj_slots[op].received, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&dj_slots[op].uncounted, 0, __ATOMIC_RELAXED);
    }
}
