from setuptools import find_packages, setup

with open("README.md", encoding="utf-8") as readme:
    longDescription = readme.read()

version: dict[str, str] = {}
with open("twisted_sockshare/_version.py", encoding="utf-8") as versionFile:
    exec(versionFile.read(), version)

plotRequires = ["matplotlib>=3.7"]
testRequires = plotRequires + [
    "pytest>=7",
    "pytest-twisted>=1.14",
    "hypothesis>=6",
    "coverage>=7",
    "cryptography",
    "service_identity",
    "pyOpenSSL",
]
devRequires = testRequires + ["mypy>=1.10", "mypy-zope>=1.0", "ruff>=0.5", "sphinx>=7", "pydoctor>=24"]

setup(
    name="twisted_sockshare",
    version=version["__version__"],
    description="One shared, lazily opened, counted connection per backend, for Twisted",
    long_description=longDescription,
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.11",
    packages=find_packages(include=["twisted_sockshare", "twisted_sockshare.*"]) + ["twisted.plugins"],
    package_data={"twisted": ["plugins/sockshare_plugin.py"], "twisted_sockshare": ["py.typed"]},
    install_requires=["Twisted>=23.10"],
    extras_require={
        "plot": plotRequires,
        "fuzz": ["atheris"],
        "test": testRequires,
        "dev": devRequires,
    },
    entry_points={"console_scripts": ["sockshare = twisted_sockshare.bench.cli:main"]},
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.11",
        "Topic :: System :: Networking",
    ],
)
