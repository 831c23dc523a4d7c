/*
 * nbody.c — the classic five-body simulation (Sun, Jupiter, Saturn, Uranus,
 * Neptune) with a symplectic Euler integrator; each step advances a fixed
 * number of iterations.
 *
 * Shows: a CPU-bound step task with a tiny state (five bodies), the one the
 * execution-overhead benchmark uses. The same source builds natively for
 * comparison: the header supplies a main() that calls baton_step in a loop.
 *
 * Run:   baton run examples/nbody.wasm
 *        baton run examples/nbody.wasm -- 1000 50000   # steps, iterations/step
 * Native (see build.sh):
 *        clang-14 -O2 -DBATON_NATIVE -Iguest examples/nbody.c -o nbody -lm
 *        ./nbody 1000 50000
 *
 * Arguments: [steps = 100] [iterations per step = 10000], time step 0.01.
 * baton_step is called exactly `steps` times (once if steps is 0).
 * Output (defaults):
 *     nbody: 100 steps x 10000 iterations
 *     energy before: -0.169075164
 *     energy after:  -0.169086185
 *     (with 1000 50000: -0.169059907, the well-known 50M-iteration value)
 * Wasm and native builds print the same numbers.
 */
#include <math.h>
#include <stdio.h>

#include "baton.h"

#define NBODIES 5
#define SOLAR_MASS (4.0 * M_PI * M_PI)
#define DAYS_PER_YEAR 365.24

typedef struct {
    double x, y, z, vx, vy, vz, mass;
} body;

/* Positions in AU, velocities in AU/day (scaled to AU/year below), masses
 * in solar masses (scaled below). */
static body bodies[NBODIES] = {
    /* Sun */
    {0, 0, 0, 0, 0, 0, 1},
    /* Jupiter */
    {4.84143144246472090e+00, -1.16032004402742839e+00,
     -1.03622044471123109e-01, 1.66007664274403694e-03,
     7.69901118419740425e-03, -6.90460016972063023e-05,
     9.54791938424326609e-04},
    /* Saturn */
    {8.34336671824457987e+00, 4.12479856412430479e+00,
     -4.03523417114321381e-01, -2.76742510726862411e-03,
     4.99852801234917238e-03, 2.30417297573763929e-05,
     2.85885980666130812e-04},
    /* Uranus */
    {1.28943695621391310e+01, -1.51111514016986312e+01,
     -2.23307578892655734e-01, 2.96460137564761618e-03,
     2.37847173959480950e-03, -2.96589568540237556e-05,
     4.36624404335156298e-05},
    /* Neptune */
    {1.53796971148509165e+01, -2.59193146099879641e+01,
     1.79258772950371181e-01, 2.68067772490389322e-03,
     1.62824170038242295e-03, -9.51592254519715870e-05,
     5.15138902046611451e-05},
};

static long steps, per_step, step_no;

static double energy(void) {
    double e = 0;
    for (int i = 0; i < NBODIES; i++) {
        const body *a = &bodies[i];
        e += 0.5 * a->mass * (a->vx * a->vx + a->vy * a->vy + a->vz * a->vz);
        for (int j = i + 1; j < NBODIES; j++) {
            const body *b = &bodies[j];
            double dx = a->x - b->x, dy = a->y - b->y, dz = a->z - b->z;
            e -= a->mass * b->mass / sqrt(dx * dx + dy * dy + dz * dz);
        }
    }
    return e;
}

static void advance(double dt) {
    for (int i = 0; i < NBODIES; i++) {
        body *a = &bodies[i];
        for (int j = i + 1; j < NBODIES; j++) {
            body *b = &bodies[j];
            double dx = a->x - b->x, dy = a->y - b->y, dz = a->z - b->z;
            double d2 = dx * dx + dy * dy + dz * dz;
            double mag = dt / (d2 * sqrt(d2));
            double ma = a->mass * mag, mb = b->mass * mag;
            a->vx -= dx * mb; a->vy -= dy * mb; a->vz -= dz * mb;
            b->vx += dx * ma; b->vy += dy * ma; b->vz += dz * ma;
        }
    }
    for (int i = 0; i < NBODIES; i++) {
        body *a = &bodies[i];
        a->x += dt * a->vx;
        a->y += dt * a->vy;
        a->z += dt * a->vz;
    }
}

BATON_INIT {
    steps = baton_arg_long(1, 100);
    per_step = baton_arg_long(2, 10000);
    if (steps < 0 || per_step < 0) {
        fprintf(stderr, "usage: nbody [steps >= 0] [iterations per step >= 0]\n");
        exit(2);
    }
    /* Units: masses in solar masses * 4 pi^2, velocities per year. */
    for (int i = 0; i < NBODIES; i++) {
        bodies[i].vx *= DAYS_PER_YEAR;
        bodies[i].vy *= DAYS_PER_YEAR;
        bodies[i].vz *= DAYS_PER_YEAR;
        bodies[i].mass *= SOLAR_MASS;
    }
    /* Give the Sun the momentum that makes the total zero. */
    double px = 0, py = 0, pz = 0;
    for (int i = 0; i < NBODIES; i++) {
        px += bodies[i].vx * bodies[i].mass;
        py += bodies[i].vy * bodies[i].mass;
        pz += bodies[i].vz * bodies[i].mass;
    }
    bodies[0].vx = -px / SOLAR_MASS;
    bodies[0].vy = -py / SOLAR_MASS;
    bodies[0].vz = -pz / SOLAR_MASS;
    printf("nbody: %ld steps x %ld iterations\n", steps, per_step);
    printf("energy before: %.9f\n", energy());
    fflush(stdout);
}

BATON_STEP {
    if (step_no < steps) {
        for (long i = 0; i < per_step; i++)
            advance(0.01);
        step_no++;
    }
    if (step_no < steps)
        return BATON_CONTINUE;
    printf("energy after:  %.9f\n", energy());
    BATON_FINISH(0);
}
