"""Install with ``pip install .``: the package, and the dispyscheduler/dispynode commands."""

from setuptools import find_packages, setup

setup(
    name='dispyscheduler',
    version='0.1.0',
    description='Shared job scheduler for Python in the family of dispy, on gevent and msgpack',
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['dispyscheduler', 'dispyscheduler.*']),
    package_data={'dispyscheduler': ['py.typed']},  # its type hints are for users' checkers too
    python_requires='>=3.10',
    install_requires=[
        'gevent>=24.2',
        'msgpack>=1.0.5',
        'pyOpenSSL>=24.0',
        'cryptography>=42.0',
        'cloudpickle>=3.0',
        'prometheus_client>=0.17',
        'psutil>=5.9',
    ],
    extras_require={'test': ['pytest>=8.0', 'hypothesis>=6.100', 'ruff>=0.5', 'mypy>=1.12',
                             'types-gevent>=24.2', 'joblib>=1.3', 'scikit-learn>=1.3'],
                    # joblib.parallel_backend('dispyscheduler', ...) (client/joblib_backend.py)
                    'joblib': ['joblib>=1.3']},
    entry_points={'console_scripts': [
        'dispyscheduler = dispyscheduler.cli:scheduler_main',
        'dispynode = dispyscheduler.cli:node_main',
        'dispyscheduler-status = dispyscheduler.scheduler.report:main',
    ]},
    license='MIT',
)
